"""The C module's sources are listed twice (make and CMake ports): the lists must agree."""

import re
from pathlib import Path

MODULE = Path(__file__).resolve().parent.parent / "firmware" / "usermod" / "sealink_crypto"


def _basenames(paths):
    return sorted(Path(p).name for p in paths)


def test_make_and_cmake_list_the_same_sources():
    mk = (MODULE / "micropython.mk").read_text()
    cmake = (MODULE / "micropython.cmake").read_text()
    mk_sources = re.findall(r"^SRC_USERMOD(?:_LIB)?_C \+= (\S+\.c)$", mk, re.M)
    block = re.search(r"target_sources\([^)]*\)", cmake, re.S).group(0)
    cmake_sources = re.findall(r"(\S+\.c)", block)
    assert _basenames(mk_sources) == ["dice.c", "dice_unix.c", "ed25519.c", "hash_sha512_cp.c",
                                      "modsealink_crypto.c", "monocypher.c", "noise.c",
                                      "sodium_utils.c"]
    assert _basenames(mk_sources) == _basenames(cmake_sources)


def test_fetched_sources_reached_inside_the_module_folder():
    # Objects are placed by their path below USER_C_MODULES: a source outside the module
    # folder would put one shared object outside every board's build folder.
    for name, source in (("monocypher", "monocypher.c"),
                         ("libsodium", "crypto_hash/sha512/cp/hash_sha512_cp.c")):
        link = MODULE / name
        assert link.is_symlink()
        assert (link / source).exists(), f"run `make setup` to fetch {name}"
