# _sealink_crypto for CMake-based ports (ESP32, ESP32-C3 with ESP-IDF).
# Keep the source list in step with micropython.mk (tests/test_firmware_sources.py).
add_library(usermod_sealink_crypto INTERFACE)

# Monocypher 4.0.3 from deps/monocypher (tools/fetch-monocypher.sh), and libsodium
# 1.0.18's SHA-512 from deps/libsodium (tools/fetch-libsodium.sh), via the symlinks.
set(MONOCYPHER_DIR ${CMAKE_CURRENT_LIST_DIR}/monocypher)
set(LIBSODIUM_DIR ${CMAKE_CURRENT_LIST_DIR}/libsodium)

target_sources(usermod_sealink_crypto INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/modsealink_crypto.c
    ${CMAKE_CURRENT_LIST_DIR}/noise.c
    ${MONOCYPHER_DIR}/monocypher.c
    ${CMAKE_CURRENT_LIST_DIR}/ed25519.c
    ${CMAKE_CURRENT_LIST_DIR}/dice.c
    ${CMAKE_CURRENT_LIST_DIR}/dice_unix.c
    ${CMAKE_CURRENT_LIST_DIR}/sodium_utils.c
    ${LIBSODIUM_DIR}/crypto_hash/sha512/cp/hash_sha512_cp.c
)

# The DICE code hashes with lib/crypto-algorithms' SHA-256, which the make-based ports
# link through their hashlib; ESP-IDF ports use mbedtls for hashlib, so it comes here.
target_sources(usermod_sealink_crypto INTERFACE
    ${MICROPY_DIR}/lib/crypto-algorithms/sha256.c
)

target_include_directories(usermod_sealink_crypto INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
    ${MONOCYPHER_DIR}
    ${LIBSODIUM_DIR}/include/sodium
)

target_compile_definitions(usermod_sealink_crypto INTERFACE
    CONFIGURED=1
    NATIVE_LITTLE_ENDIAN=1
)

target_link_libraries(usermod INTERFACE usermod_sealink_crypto)
