"""What the QEMU boards promise an application: timer-backed ticks that count guest
instructions under -icount, real sleeping, host entropy, poll() on stdin and asyncio."""

import time

import pytest

from devices import QemuDevice

BOARDS = ["QEMU_MPS2_AN385", "QEMU_VIRT_RV32"]

# A fixed amount of guest work between two ticks_us() reads.
_WORK = """
import time
def work():
    x = 0
    for i in range(2000):
        x += i * i
    return x
work()
t0 = time.ticks_us(); work(); print(time.ticks_diff(time.ticks_us(), t0))
"""


def _ticks_for_work(board, shift):
    device = QemuDevice(board, icount=shift)
    try:
        return int(device.exec(_WORK).strip())
    finally:
        device.close()


@pytest.mark.parametrize("board", BOARDS)
def test_icount_makes_ticks_count_instructions(board):
    first = _ticks_for_work(board, 0)
    again = _ticks_for_work(board, 0)
    slower = _ticks_for_work(board, 1)
    assert first > 100  # the loop is >100k instructions: 1 us per 1000 at shift=0
    assert abs(first - again) <= 2, (first, again)
    # shift=1: 2 ns per instruction, so the same work reads twice the time.
    assert abs(slower - 2 * first) <= 4, (first, slower)


@pytest.fixture(scope="module", params=BOARDS)
def board(request):
    device = QemuDevice(request.param)
    yield device
    device.close()


def test_sleep_waits_in_guest_time(board):
    out = board.exec("import time\nt = time.ticks_ms(); time.sleep_ms(150)\n"
                     "print(time.ticks_diff(time.ticks_ms(), t))")
    assert 150 <= int(out) <= 170


def test_urandom_differs_between_boots(board):
    name = board.board
    a = board.exec("import os\nprint(os.urandom(16).hex())").strip()
    other = QemuDevice(name)
    try:
        b = other.exec("import os\nprint(os.urandom(16).hex())").strip()
    finally:
        other.close()
    assert len(a) == 32 and a != b


def test_stdin_poll_and_asyncio(board):
    out = board.exec(
        "import select, sys, asyncio\n"
        "p = select.poll(); p.register(sys.stdin, select.POLLIN)\n"
        "print(len(p.poll(50)))\n"
        "async def tick(n):\n"
        "    await asyncio.sleep_ms(20 * n)\n"
        "    return n\n"
        "async def main():\n"
        "    return await asyncio.gather(tick(3), tick(1), tick(2))\n"
        "print(asyncio.run(main()))\n"
        "print(hasattr(sys.stdin, 'buffer'))")
    assert out.split() == ["0", "[3,", "1,", "2]", "True"]


def test_idle_guest_sleeps(board):
    # An idle guest waits in WFI: over two seconds at the REPL, QEMU uses a small
    # fraction of a core (the port's original stdin busy-waited: a whole core).
    import psutil

    proc = psutil.Process(board.proc.pid)
    before = proc.cpu_times()
    time.sleep(2.0)
    after = proc.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    assert used < 0.5, f"QEMU used {used:.2f} s of CPU in 2 s idle"


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_names_its_own_board(board):
    # sys.implementation._build is the board the image was built for (an RV32 image
    # once reported MPS2_AN385, the qemu port's default).
    device = QemuDevice(board)
    try:
        got = device.exec("import sys\nprint(sys.implementation._build)").strip()
    finally:
        device.close()
    assert got == board
