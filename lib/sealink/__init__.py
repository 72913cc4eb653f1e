# Sealink: end-to-end encrypted, mutually authenticated channels for small devices.
# This package runs unchanged on MicroPython (frozen into firmware) and on CPython.

__version__ = "0.1.0"
