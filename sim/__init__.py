"""Sealink's simulation: modeled radios (LoRa, the RAK3172 UART module, BLE), the
modeled LoRa concentrator, and the fleet launcher behind `make demo`."""
