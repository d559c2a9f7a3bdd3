{
  # Built by `make build` (npx node-gyp rebuild --directory native). libfuse 2's headers and its
  # link stub come from fuse-native's own dependency, so no -dev package is needed; at run time
  # the addon shares the system's libfuse.so.2 with fuse-native (one module registry).
  "variables": { "vmssfs_asan%": 0 },
  "targets": [{
    "target_name": "vmssfs_native",
    "sources": ["addon.c", "crypto_napi.c", "decode_napi.c", "encobj.c", "fastlz.c", "fusemodule.c", "mapspec.c", "napi_args.c", "pending.c", "readmap.c", "seekindex.c", "seekindex_napi.c", "splice.c", "stderr_napi.c"],
    "include_dirs": ["<!(node -p \"require('fuse-shared-library-linux').include\")"],
    "libraries": ["<!(node -p \"require('fuse-shared-library-linux').lib\")"],
    "defines": ["_FILE_OFFSET_BITS=64"],
    "cflags!": ["-Wno-unused-parameter"],
    "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"],
    "conditions": [
      ["vmssfs_asan==1", {
        "cflags": ["-fsanitize=address", "-fno-omit-frame-pointer", "-g", "-O1"],
        "ldflags": ["-fsanitize=address"]
      }]
    ]
  }]
}
