# The Sealink package frozen into a board: the protocol core every device runs, and
# only the parts this board uses on top of it.  Included by each board's manifest:
#
#   include("$(BOARD_DIR)/../sealink_manifest.py", drivers=("rak3172",), app=True)
#
# drivers      radio drivers frozen (lib/sealink/drivers/<name>.py; rak3172 holds
#              ModemError, the drivers' one error, so every other driver needs it)
# app          sealink.app, the LoRa node's main loop (needs the rak3172 driver)
# lorawan      the RAK3172's LoRaWAN mode (sealink.drivers.rak3172_lorawan)
# software     the pure-Python crypto, HMAC, HKDF and Noise handshake, for firmware without
#              the C module (Sealink firmware has _sealink_crypto, whose Handshake runs
#              the Noise handshake).  What runs only on CPython (_crypto_cryptography,
#              _ed25519_cryptography, keys) is never frozen.
# opt          mpy-cross optimisation level (3: asserts and __debug__ blocks dropped)
options.defaults(drivers=(), app=False, lorawan=False, software=False, opt=None)

core = [
    "__init__.py", "errors.py", "crypto.py", "_crypto_native.py", "replay.py", "wire.py",
    "fragment.py", "reliable.py", "session.py", "device.py", "lora.py", "attestation.py",
    "ed25519.py",
]
if options.software:
    core += ["_crypto_python.py", "_hkdf_python.py", "hkdf.py", "noise.py"]
drivers = list(options.drivers)
if options.app or options.lorawan:
    drivers.append("rak3172")
if options.app:
    core.append("app.py")
if options.lorawan:
    drivers.append("rak3172_lorawan")
if drivers:
    core += ["drivers/__init__.py"] + [f"drivers/{d}.py" for d in sorted(set(drivers))]
package("sealink", files=core, base_path="$(BOARD_DIR)/../../lib", opt=options.opt)
