# Only what stock firmware freezes that Sealink relies on: asyncio.
include("$(MPY_DIR)/extmod/asyncio")
