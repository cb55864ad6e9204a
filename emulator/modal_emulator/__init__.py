"""A local emulator of Modal's API, served to the unmodified ``modal`` SDK.

Sandboxes are real Linux containers (overlayfs over the host root, mount/PID/UTS/network
namespaces); see docs/emulator.md for what is and is not emulated.
"""

__version__ = "0.1.0"
