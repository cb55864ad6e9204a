"""The emulator's Linux container runtime: storage, layers, overlay roots, namespaces, tunnels, cgroups.

It knows nothing of gRPC or of what Modal ids mean; the server drives it. Modules:

- :mod:`store`: the loop-mounted ext4 store holding layers and sandbox upper dirs
- :mod:`mask`: the layer that hides host paths (state dir, /tmp, homes, ...) from sandboxes
- :mod:`build`: RUN steps and file layers of image builds
- :mod:`container`: sandboxes (start, exec, snapshot, terminate) and ``kill_sandbox``/``cleanup_stale``
- :mod:`rootfs`, :mod:`launch`, :mod:`process`, :mod:`tunnels`, :mod:`cgroups`, :mod:`pidfiles`: their parts

Requires Linux and root.
"""
