"""The Sealink gateway: terminates the channels of a fleet (CPython)."""
