"""Open any rosbag2 bag (MCAP or sqlite3) for reading raw messages, with errors a user can act on.

No rclpy: the ``rosbags`` library reads the storage, this module adds what it lacks:

* :class:`RawBag` lists the bag's topics (name, type, count, definition, type hash) and yields raw
  CDR messages of the topics asked for. Asking for no topic yields nothing (``rosbags`` reads an
  empty connection list as "every connection", which made a bag of images decode as
  ``InteractionSample``);
* an MCAP file cut short by a crash (no footer / summary) is scanned record by record
  (:func:`scan_mcap`): every complete message before the cut is recovered, including the complete
  records inside a partly written chunk (uncompressed, zstd or lz4), and
  :attr:`RawBag.truncation` says how many messages were recovered and where the file stopped;
* an MCAP file or a folder of MCAP files without ``metadata.yaml`` is read from the files
  themselves (MCAP is self-describing); a folder with ``.db3`` files but no ``metadata.yaml``
  is an error naming the missing file (sqlite3 storage keeps no message definitions of its own);
* a ROS 1 ``.bag`` is an error that says how to convert it.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

LOG = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"
PACKAGE = "selfsup_perception"


def _msg_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)) / "msg")
    except Exception:  # noqa: BLE001 - not installed through ament: the source tree is enough
        pass
    return [d for d in dirs if d.is_dir()]


def make_typestore():
    """A rosbags typestore with ROS 2 Kilted's standard types plus this package's messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    dirs = _msg_dirs()
    if not dirs:
        raise FileNotFoundError(f"cannot find the {PACKAGE} msg/ definitions")
    types = {}
    for path in sorted(dirs[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


class BagReadError(RuntimeError):
    """A bag that cannot be opened or decoded; the message says why and what to do."""


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    msgtype: str  # 'pkg/msg/Name'
    count: int
    msgdef: str = ""  # message definition text stored in the bag ('' when the bag carries none)
    digest: str = ""  # type description hash (RIHS01_...) when the bag carries one


@dataclass(frozen=True)
class Truncation:
    """Where a damaged MCAP file stopped and what was recovered before it."""

    file: str
    recovered_messages: int
    stopped_at_byte: int
    file_size: int
    reason: str
    last_log_time_ns: Optional[int] = None

    def describe(self) -> str:
        last = (f", last recovered message at {self.last_log_time_ns * 1e-9:.3f} s"
                if self.last_log_time_ns is not None else "")
        return (f"{self.file} is truncated ({self.reason}): recovered {self.recovered_messages} complete "
                f"message(s) before the cut at byte {self.stopped_at_byte} of {self.file_size}{last}")


# ============================================================================ MCAP record scanner
@dataclass
class _McapChannel:
    topic: str
    schema_name: str
    schema_data: str
    encoding: str
    count: int = 0


@dataclass
class McapScan:
    """What :func:`scan_mcap` found: channels by id and, when the file ended early, the truncation."""

    channels: dict[int, _McapChannel] = field(default_factory=dict)
    truncation: Optional[Truncation] = None
    messages: int = 0


def _decompress_partial(compression: str, data: bytes, expected: int) -> tuple[bytes, bool]:
    """(decompressed bytes, complete?) of a chunk body that may be cut short."""
    if compression == "":
        return data[:expected], len(data) >= expected
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:  # pragma: no cover - depends on the interpreter
            from backports import zstd
        dec = zstd.ZstdDecompressor()
        try:
            out = dec.decompress(data)
        except zstd.ZstdError:
            return b"", False
        return out, len(out) >= expected
    if compression == "lz4":
        import lz4.frame

        dec = lz4.frame.LZ4FrameDecompressor()
        try:
            out = dec.decompress(data)
        except RuntimeError:
            return b"", False
        return out, len(out) >= expected
    raise BagReadError(f"MCAP chunk compression {compression!r} is not supported (supported: none, zstd, lz4)")


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return buf[pos + 4 : pos + 4 + n].decode(), pos + 4 + n


def scan_mcap(path: str | Path) -> McapScan:
    """Channels, message counts and (if the file ends early) the truncation of an MCAP file."""
    scan = McapScan()
    for _ in iter_mcap_messages(path, set(), scan):
        pass
    return scan


def iter_mcap_messages(path: str | Path, want_topics: set[str], scan: Optional[McapScan] = None
                       ) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, log_time_ns, data) of the complete messages of ``want_topics``, in file order.

    Reads the file record by record from its start (memory-mapped), stopping cleanly at a cut; ``scan``
    (if given) receives the channels, counts and truncation as the reading goes.
    """
    path = Path(path)
    scan = scan if scan is not None else McapScan()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise BagReadError(f"{path} is empty or not an MCAP file ({size} bytes)")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield from _mcap_records(path, data, size, want_topics, scan)
        finally:
            data.close()


def _mcap_records(path: Path, data, size: int, want_topics: set[str], scan: McapScan):
    if data[:8] != MCAP_MAGIC:
        raise BagReadError(f"{path} is not an MCAP file (its first bytes are not the MCAP magic)")
    schemas: dict[int, tuple[str, str]] = {}
    state: dict[str, object] = {"last_time": None}

    def handle(op: int, body: bytes):
        if op == 0x03:  # Schema
            (sid,) = struct.unpack_from("<H", body, 0)
            name, p = _string(body, 2)
            _enc, p = _string(body, p)
            (n,) = struct.unpack_from("<I", body, p)
            schemas[sid] = (name, body[p + 4 : p + 4 + n].decode(errors="replace"))
        elif op == 0x04:  # Channel
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, p = _string(body, 4)
            encoding, p = _string(body, p)
            name, text = schemas.get(sid, ("", ""))
            if cid not in scan.channels:
                scan.channels[cid] = _McapChannel(topic, name, text, encoding)
        elif op == 0x05:  # Message
            cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
            channel = scan.channels.get(cid)
            if channel is None:
                return
            channel.count += 1
            scan.messages += 1
            state["last_time"] = log_time
            if channel.topic in want_topics:
                yield channel.topic, channel.schema_name, log_time, bytes(body[22:])

    def records(buf, start: int, end: int, top: bool):
        """Handle the complete records in buf[start:end]; sets state['why'] when it stops early."""
        pos = start
        while pos < end:
            if end - pos < 9:
                state.setdefault("why", (f"{end - pos} stray byte(s) where a record header should be", pos))
                return
            op = buf[pos]
            (length,) = struct.unpack_from("<Q", buf, pos + 1)
            body_start = pos + 9
            if body_start + length > end:
                if op == 0x06 and top:  # a chunk being written when the recorder died
                    yield from chunk(buf[body_start:end], partial=True)
                    # (a record cut inside the partial chunk is expected there: this is the reason)
                    state["why"] = (f"the file ends inside the chunk that starts at byte {pos}", pos)
                else:
                    state.setdefault("why", (f"record 0x{op:02x} at byte {pos} needs {length} bytes, "
                                             f"{end - body_start} left", pos))
                return
            body = buf[body_start : body_start + length]
            if op == 0x06:
                yield from chunk(body, partial=False, at=pos)
            elif op == 0x02:  # Footer: the file is complete
                state["footer"] = True
                return
            else:
                try:
                    yield from handle(op, body)
                except (struct.error, UnicodeDecodeError) as exc:
                    state.setdefault("why", (f"record 0x{op:02x} at byte {pos} is corrupt ({exc})", pos))
                    return
            pos = body_start + length

    def chunk(body: bytes, partial: bool, at: int = 0):
        try:
            _t0, _t1, usize, _crc = struct.unpack_from("<QQQI", body, 0)
            compression, p = _string(body, 28)
            (csize,) = struct.unpack_from("<Q", body, p)
        except struct.error:
            return  # the cut fell inside the chunk header: nothing of it is readable
        raw, _complete = _decompress_partial(compression, bytes(body[p + 8 : p + 8 + csize]), usize)
        yield from records(raw, 0, len(raw), top=False)
        if not partial and "why" in state and "chunk_why" not in state:
            state["chunk_why"] = True
            why, _ = state["why"]
            state["why"] = (f"chunk at byte {at} is damaged: {why}", at)

    yield from records(data, 8, size, top=True)
    footer_seen = bool(state.get("footer")) and data[size - 8 : size] == MCAP_MAGIC
    if "why" in state or not footer_seen:
        reason, at = state.get("why", ("no footer: the recording did not finish", size))
        scan.truncation = Truncation(str(path), scan.messages, int(at), size, str(reason), state["last_time"])


# ============================================================================ bag
def _is_rosbag2_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "metadata.yaml").exists() or any(path.glob("*.mcap"))
                              or any(path.glob("*.db3")))


def looks_like_bag(path: str | Path) -> bool:
    """True for a rosbag2 folder (metadata.yaml, *.mcap or *.db3 inside) or an .mcap/.db3/.bag file."""
    path = Path(path)
    return _is_rosbag2_dir(path) or (path.is_file() and path.suffix in (".mcap", ".db3", ".bag"))


class RawBag:
    """Topics and raw messages of one bag (a rosbag2 folder, or a single .mcap file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.topics: dict[str, TopicInfo] = {}
        self.truncation: list[Truncation] = []
        self._mcap_files: list[Path] = []  # read by the record scanner (no metadata or damaged)
        self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        path = self.path
        if not path.exists():
            raise FileNotFoundError(f"no bag at {path}")
        if path.is_file() and path.suffix == ".bag":
            raise BagReadError(f"{path} is a ROS 1 bag; convert it to rosbag2 first "
                               f"(e.g. `rosbags-convert --src {path} --dst {path.with_suffix('')}`)")
        if path.is_file() and path.suffix == ".db3":
            path = self.path = path.parent
        if path.is_file():
            if path.suffix != ".mcap":
                raise BagReadError(f"{path} is neither a rosbag2 folder nor an .mcap file")
            self._scan_files([path])
            return
        if not (path / "metadata.yaml").exists():
            mcaps = sorted(path.glob("*.mcap"))
            if mcaps:
                LOG.info("%s has no metadata.yaml; reading its MCAP file(s) directly", path)
                self._scan_files(mcaps)
                return
            if any(path.glob("*.db3")):
                raise BagReadError(
                    f"{path / 'metadata.yaml'} is missing: a sqlite3 bag cannot be read without it "
                    f"(recreate it with `ros2 bag reindex {path} -s sqlite3`)")
            raise BagReadError(f"{path} is not a rosbag2 bag: no metadata.yaml, .mcap or .db3 file in it")
        self._open_rosbags()

    def _open_rosbags(self) -> None:
        from rosbags.rosbag2 import Reader

        try:
            with Reader(self.path) as reader:
                for c in reader.connections:
                    prev = self.topics.get(c.topic)
                    count = c.msgcount + (prev.count if prev else 0)
                    self.topics[c.topic] = TopicInfo(c.topic, c.msgtype, count, c.msgdef.data or "", c.digest or "")
        except Exception as exc:  # noqa: BLE001 - rosbags raises several unrelated types
            text = str(exc)
            mcaps = sorted(self.path.glob("*.mcap"))
            if mcaps:  # damaged file, or metadata rosbags does not know (a newer version): MCAP describes itself
                LOG.warning("%s: %s; reading its MCAP file(s) record by record", self.path, text)
                self.topics.clear()
                self._scan_files(mcaps)
                return
            raise BagReadError(f"cannot read bag {self.path}: {text}") from exc

    def _scan_files(self, files: list[Path]) -> None:
        self._mcap_files = files
        for f in files:
            scan = scan_mcap(f)
            for ch in scan.channels.values():
                prev = self.topics.get(ch.topic)
                self.topics[ch.topic] = TopicInfo(ch.topic, ch.schema_name, ch.count + (prev.count if prev else 0),
                                                  ch.schema_data)
            if scan.truncation is not None:
                LOG.warning("%s", scan.truncation.describe())
                self.truncation.append(scan.truncation)

    # ------------------------------------------------------------------ reading
    def describe_topics(self) -> str:
        if not self.topics:
            return "the bag has no topics"
        return "; ".join(f"{t.topic} [{t.msgtype}] x{t.count}" for t in sorted(self.topics.values(),
                                                                             key=lambda t: t.topic))

    def topics_of_type(self, *msgtypes: str) -> list[str]:
        return sorted(t.topic for t in self.topics.values() if t.msgtype in msgtypes)

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log_time_ns, raw CDR bytes) of the given topics; nothing if ``topics`` is empty."""
        wanted = {t for t in topics if t in self.topics}
        if not wanted:
            return
        if self._mcap_files:
            for f in self._mcap_files:
                yield from iter_mcap_messages(f, wanted)
            return
        from rosbags.rosbag2 import Reader

        try:
            with Reader(self.path) as reader:
                conns = [c for c in reader.connections if c.topic in wanted]
                if not conns:  # never pass an empty list: rosbags reads it as "all connections"
                    return
                for conn, stamp, raw in reader.messages(connections=conns):
                    yield conn.topic, conn.msgtype, stamp, bytes(raw)
        except BagReadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BagReadError(f"cannot read bag {self.path}: {exc}") from exc
