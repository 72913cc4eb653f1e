# _sealink_crypto for CMake-based ports (ESP32, ESP32-C3 with ESP-IDF).
# Keep the source list in step with micropython.mk (tests/test_firmware_sources.py).
add_library(usermod_sealink_crypto INTERFACE)

# Monocypher 4.0.3 from deps/monocypher (tools/fetch-monocypher.sh), via the symlink.
set(MONOCYPHER_DIR ${CMAKE_CURRENT_LIST_DIR}/monocypher)

target_sources(usermod_sealink_crypto INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/modsealink_crypto.c
    ${MONOCYPHER_DIR}/monocypher.c
)

target_include_directories(usermod_sealink_crypto INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
    ${MONOCYPHER_DIR}
)

target_link_libraries(usermod INTERFACE usermod_sealink_crypto)
