# Entry point for USER_C_MODULES=<repo>/firmware/usermod/micropython.cmake (CMake ports).
include(${CMAKE_CURRENT_LIST_DIR}/sealink_crypto/micropython.cmake)
