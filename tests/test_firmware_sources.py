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
    assert _basenames(mk_sources) == ["modsealink_crypto.c", "monocypher.c"]
    assert _basenames(mk_sources) == _basenames(cmake_sources)


def test_monocypher_reached_inside_the_module_folder():
    # Objects are placed by their path below USER_C_MODULES: a source outside the module
    # folder would put one shared object outside every board's build folder.
    link = MODULE / "monocypher"
    assert link.is_symlink()
    assert (link / "monocypher.c").exists(), "run `make setup` to fetch Monocypher"
