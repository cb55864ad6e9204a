"""The emulator's Linux container runtime: storage, layers, overlay roots, namespaces, tunnels, cgroups.

It knows nothing of gRPC or of what Modal ids mean; the server drives it. Modules:

- :mod:`store`: the loop-mounted ext4 store holding layers and sandbox upper dirs
- :mod:`bases`: base root filesystems (Debian and python references built with mmdebstrap, imports via
  :mod:`oci`), cached once per machine outside any state dir
- :mod:`private_layers`: the tools and registry-settings layers over every build step and sandbox
  (:mod:`host_registry` reads the host's registry settings)
- :mod:`build`: RUN steps and file layers of image builds
- :mod:`container`: sandboxes (start, exec, snapshot, terminate) and ``kill_sandbox``/``cleanup_stale``
- :mod:`rootfs`, :mod:`launch`, :mod:`process`, :mod:`tunnels`, :mod:`cgroups`, :mod:`pidfiles`: their parts
- :mod:`sandbox_fs_tool`: the script behind ``Sandbox.filesystem``, run confined to a sandbox's root
  (a standalone script; :mod:`modal_emulator.server.fs_tools` starts it)

Requires Linux and root.
"""
