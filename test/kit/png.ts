// Tiny deterministic PNG encoder for test fixtures.
//
// The image data is zlib-wrapped with *stored* (uncompressed) deflate blocks and the
// checksums (CRC-32, Adler-32) are computed here, so the output bytes never depend on the
// zlib version Node happens to ship. Only 8-bit RGB, filter type 0 on every row.

const CRC_TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309 / PNG / zip), optionally continuing from a previous value. */
export function crc32(buf: Buffer, prev = 0): number {
  let c = (prev ^ 0xffffffff) >>> 0;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Adler-32 as used by the zlib wrapper. */
export function adler32(buf: Buffer): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < buf.length; i++) {
    a = (a + buf[i]) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** zlib stream (RFC 1950) holding `raw` in stored deflate blocks (RFC 1951, BTYPE 00). */
export function zlibStored(raw: Buffer): Buffer {
  const parts: Buffer[] = [Buffer.from([0x78, 0x01])];
  let off = 0;
  do {
    const len = Math.min(0xffff, raw.length - off);
    const last = off + len >= raw.length;
    const hdr = Buffer.alloc(5);
    hdr[0] = last ? 1 : 0;
    hdr.writeUInt16LE(len, 1);
    hdr.writeUInt16LE(~len & 0xffff, 3);
    parts.push(hdr, raw.subarray(off, off + len));
    off += len;
  } while (off < raw.length);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(adler32(raw), 0);
  parts.push(tail);
  return Buffer.concat(parts);
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length, 0);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td), 0);
  return Buffer.concat([len, td, crc]);
}

/** Encode an 8-bit RGB image (`rgb` = width*height*3 bytes, rows top to bottom) as PNG. */
export function encodePng(width: number, height: number, rgb: Buffer): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`bad PNG dimensions ${width}x${height}`);
  }
  if (rgb.length !== width * height * 3) throw new RangeError('rgb buffer size does not match dimensions');
  const stride = width * 3;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter: None
    rgb.copy(raw, y * (stride + 1) + 1, y * stride, (y + 1) * stride);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  ihdr[10] = 0; // compression
  ihdr[11] = 0; // filter method
  ihdr[12] = 0; // no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlibStored(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * The fixture screenshot: 64x48 RGB. Recognisable pattern: an 8x8-pixel checkerboard
 * (dark blue / light grey) with a red diagonal from the top-left corner and a green
 * 1-pixel border. Deterministic.
 */
export function screenshotPng(width = 64, height = 48): Buffer {
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      let r: number, g: number, b: number;
      if (x === 0 || y === 0 || x === width - 1 || y === height - 1) {
        [r, g, b] = [0x00, 0xc0, 0x00];
      } else if (x === y) {
        [r, g, b] = [0xff, 0x00, 0x00];
      } else if (((x >> 3) + (y >> 3)) & 1) {
        [r, g, b] = [0x20, 0x30, 0x80];
      } else {
        [r, g, b] = [0xd0, 0xd0, 0xd0];
      }
      rgb[i] = r;
      rgb[i + 1] = g;
      rgb[i + 2] = b;
    }
  }
  return encodePng(width, height, rgb);
}
