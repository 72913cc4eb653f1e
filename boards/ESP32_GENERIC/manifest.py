# The port's own frozen set (needs micropython-lib, present in an upstream checkout),
# then the Sealink protocol core.
include("$(PORT_DIR)/boards/manifest.py")
package("sealink", base_path="$(BOARD_DIR)/../../lib")
