"""Plain-filesystem storage behind volumes, mounts and blobs.

Nothing here knows gRPC: the RPC mixins in :mod:`modal_emulator.server` translate requests into
calls on these classes. Everything lives under the emulator's state dir on the ordinary filesystem
(not in the runtime's loop-mounted image store), so it survives restarts and volume directories can
be bind-mounted into sandboxes.

- :mod:`.content_store`: files addressed by the SHA-256 of their bytes (uploaded files, volume blocks).
- :mod:`.volume_tree`: one volume's directory tree, with path checks and Modal's listing format.
- :mod:`.layout`: where each of these lives under the state dir.
"""
