"""Headless Chromium (Debian ``chromium``) for tests of the web pages: a
screenshot, the DOM after the page's scripts ran, and what the page logged;
plus just enough PNG and HTML reading to check them with the standard
library and numpy (no imaging dependency)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import numpy.typing as npt

from citylake_devstack import ComponentUnavailable

TIMEOUT_S = 90.0


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise ComponentUnavailable("chromium not found: install the Debian package chromium (run `make setup`)")


@dataclass(frozen=True)
class ChromiumRun:
    stdout: str
    stderr: str

    def console(self) -> list[str]:
        """What the page logged (with --enable-logging): console calls, uncaught
        exceptions, failed loads, Content-Security-Policy refusals."""
        return [line for line in self.stderr.splitlines() if ":CONSOLE" in line]


def run_chromium(chromium: str, url: str, profile: Path, *args: str, budget_ms: int = 4000) -> ChromiumRun:
    """One headless Chromium run on ``url`` with its own profile directory.

    ``--virtual-time-budget`` lets the page's timers and requests run that long
    in virtual time before the screenshot or DOM is taken, so the result does
    not depend on how busy the machine is.
    """
    argv = [
        chromium,
        "--headless=new",
        # The tests load only the service's own page from 127.0.0.1. Chromium
        # refuses to run as root (CI) with its sandbox, and containers often
        # lack the user namespaces the sandbox needs.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # a container's /dev/shm is often 64 MB
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--mute-audio",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    # A session of its own, so the renderer and GPU children go with it.
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "HOME": str(profile)},
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise AssertionError(
                f"chromium did not finish in {TIMEOUT_S:.0f}s on {url}; stderr:\n"
                + stderr.decode(errors="replace")[-4000:]
            ) from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # children it left behind, if any
    run = ChromiumRun(stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    if process.returncode != 0:
        raise AssertionError(f"chromium exited with {process.returncode} on {url}:\n{run.stderr[-4000:]}")
    return run


# ---- PNG ------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    pixels: npt.NDArray[np.uint8]  # (height, width, channels)

    def distinct_colours(self) -> int:
        rgb = self.pixels[:, :, :3].astype(np.uint32)
        return len(np.unique((rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]))

    def count(self, rgb: tuple[int, int, int]) -> int:
        return int(np.all(self.pixels[:, :, :3] == np.array(rgb, dtype=np.uint8), axis=2).sum())


def _paeth(line: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF


def _average(line: bytearray, prev: bytes, bpp: int) -> None:
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        line[i] = (line[i] + ((a + prev[i]) >> 1)) & 0xFF


def _chunks(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and the joined IDAT data."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat = 8, bytearray()
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG: depth {depth}, colour {colour}, interlace {interlace}")
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    return width, height, bpp, bytes(idat)


def decode_png(data: bytes) -> Image:
    """8-bit RGB or RGBA, not interlaced: what Chromium's screenshots are."""
    width, height, bpp, idat = _chunks(data)
    raw = zlib.decompress(idat)
    stride = width * bpp
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG data is {len(raw)} bytes, expected {height * (stride + 1)}")
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    # None, Sub and Up are whole-row numpy operations (uint8 arithmetic wraps
    # mod 256, as PNG's does); Average and Paeth depend on the decoded left
    # neighbour, so they go byte by byte.
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1)
        if kind == 0:
            decoded = line
        elif kind == 1:
            decoded = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(stride)
        elif kind == 2:
            decoded = line + prev
        elif kind in (3, 4):
            buffer = bytearray(line.tobytes())
            (_average if kind == 3 else _paeth)(buffer, prev.tobytes(), bpp)
            decoded = np.frombuffer(bytes(buffer), dtype=np.uint8)
        else:
            raise ValueError(f"row {row}: unknown PNG filter {kind}")
        out[row] = decoded
        prev = out[row]
    return Image(width, height, out.reshape(height, width, bpp))


# ---- HTML -------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # text anywhere inside, in order

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> list[Element]:
        found, pending = [], [self]
        while pending:
            node = pending.pop()
            found.append(node)
            pending.extend(reversed(node.children))
        return found

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Element]:
        """Elements inside (and including) this one; ``data_table=`` matches ``data-table``."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.classes)
            and all(e.attrs.get(name) == value for name, value in wanted.items())
        ]

    def by_id(self, element_id: str) -> Element:
        found = self.find(id=element_id)
        assert len(found) == 1, f"expected one #{element_id}, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.texts.append(data)


def parse_html(text: str) -> Element:
    """The document as a tree; text is unescaped (``&lt;`` reads as ``<``)."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root
