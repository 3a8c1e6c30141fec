"""rosbag2 files (sqlite3 or mcap) through rosbags: reading the input, writing the output bag."""

from __future__ import annotations

from pathlib import Path

from lisa_ros.runtime import message_fields as fields

from .errors import EvalError
from .typestore import build

STORAGES = ("mcap", "sqlite3")


def storage_of(bag: Path) -> str:
    """"mcap" or "sqlite3": a .mcap file or a folder holding one is mcap."""
    if bag.is_file():
        return "mcap" if bag.suffix == ".mcap" else "sqlite3"
    return "mcap" if any(bag.glob("*.mcap")) else "sqlite3"


def open_reader(bag: Path):
    """An open rosbags Reader of `bag` (close it); EvalError when it cannot be read."""
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(bag)
        reader.open()
    except Exception as error:  # rosbags raises several kinds (FileNotFoundError, ReaderError, yaml, sqlite, mcap)
        raise EvalError(f"cannot read bag {bag}: {type(error).__name__}: {error}") from error
    return reader


def read_messages(reader, bag: Path, connections=()):
    """(connection, log time ns, raw CDR bytes) of the bag's messages (those of `connections`;
    empty: all) in log-time order; a storage failure becomes an EvalError."""
    iterator = reader.messages(connections=connections)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # truncated chunks, bad CRCs, sqlite errors, ...
            raise EvalError(f"cannot read bag {bag}: {type(error).__name__}: {error}") from error
        yield item


def first_image_size(reader, bag: Path, topic: str, store, compressed: bool) -> tuple[int, int]:
    """(H, W) of the first image on `topic` that decodes, read before the run (to check the
    script's masks, and as the size of an answer without an image); EvalError when there is none."""
    from lisa_ros.runtime.codec import compressed_to_rgb

    wanted = [connection for connection in reader.connections if connection.topic == topic]
    problem = ""
    for connection, log_time, raw in read_messages(reader, bag, wanted):
        try:
            msg = store.deserialize_cdr(raw, connection.msgtype)
        except Exception as error:  # the run would stop at this message too
            raise EvalError(f"cannot deserialize the image on {topic} at log time {log_time}: {error}") from error
        if not compressed:
            return msg.height, msg.width
        try:
            return compressed_to_rgb(msg).shape[:2]
        except ValueError as error:  # an error result in the run; the next image may decode
            problem = problem or f" that decodes (the first: {error})"
    raise EvalError(f"bag {bag} has no image on {topic}{problem}")


class OutputBag:
    """The output rosbag2: the input's connections copied through, plus the node's outputs
    (lisa_ros.runtime.message_fields.OUTPUT_TYPES) under a namespace, counted per output.

    Arguments:
        path: the bag folder to create.
        storage: "mcap" or "sqlite3".
        store: the typestore (lisa_ros.bag.typestore.typestore()).
        input_connections: the input reader's connections, copied with their definitions.
        namespace: the outputs' namespace ("/lisa" -> /lisa/result, ...; "" or "/": /result).
    """

    def __init__(self, path: Path, storage: str, store, input_connections, namespace: str):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path, self.store = path, store
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        try:
            self.writer.open()
        except Exception as error:
            raise EvalError(f"cannot write the output bag {path}: {error}") from error
        self._copies = self._copy_connections(input_connections)
        self.namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self._outputs = {
            name: self.writer.add_connection(f"{self.namespace}/{name}", msgtype, typestore=store)
            for name, msgtype in fields.OUTPUT_TYPES.items()
        }
        self.counts = {name: 0 for name in self._outputs}

    def _copy_connections(self, connections) -> dict:
        """input connection id -> output connection (one per topic and type)."""
        copies, by_key = {}, {}
        for connection in connections:
            key = (connection.topic, connection.msgtype)
            if key not in by_key:
                msgdef, digest, ext = connection.msgdef.data, connection.digest, connection.ext
                kwargs = dict(
                    serialization_format=getattr(ext, "serialization_format", "cdr"),
                    offered_qos_profiles=getattr(ext, "offered_qos_profiles", []),
                )
                if msgdef and digest:
                    definition = dict(msgdef=msgdef, rihs01=digest)
                else:
                    definition = dict(typestore=self.store)
                by_key[key] = self.writer.add_connection(connection.topic, connection.msgtype, **definition, **kwargs)
            copies[connection.id] = by_key[key]
        return copies

    def copy(self, connection, log_time: int, raw) -> None:
        """An input message, byte for byte, at its log time."""
        self.writer.write(self._copies[connection.id], log_time, raw)

    def publish(self, name: str, values: dict, log_time: int) -> None:
        """An output message (`name` in OUTPUT_TYPES) from message_fields' nested dict."""
        msgtype = fields.OUTPUT_TYPES[name]
        raw = self.store.serialize_cdr(build(self.store, msgtype, values), msgtype)
        self.writer.write(self._outputs[name], log_time, raw)
        self.counts[name] += 1

    def topic_counts(self) -> dict[str, int]:
        """output topic -> messages written."""
        return {f"{self.namespace}/{name}": count for name, count in self.counts.items()}

    def close(self) -> None:
        self.writer.close()
