"""Tests of emulator.firmware.blockstore (shared image blocks)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from emulator.firmware.blockstore import (
    BlockStore,
    ImageKey,
    MissingBlockError,
    expected_blocks,
)

BS = 64
FILE = bytes(range(256)) * 2 + b"tail"  # 516 bytes: 8 full blocks and 4 bytes
NBLOCKS = expected_blocks(len(FILE), BS)
KEY = ImageKey(hashlib.sha256(FILE).digest(), BS)


def _block(num: int, data: bytes = FILE) -> bytes:
    return data[num * BS : (num + 1) * BS]


def _put_all(store: BlockStore, key: ImageKey = KEY, data: bytes = FILE) -> None:
    for num in range(expected_blocks(len(data), key.block_size)):
        assert store.put(key, num, _block(num, data))


def test_geometry() -> None:
    assert NBLOCKS == 9
    assert expected_blocks(512, 64) == 8 and expected_blocks(513, 64) == 9


def test_image_key_is_hashable_and_frozen() -> None:
    assert {KEY: 1}[ImageKey(KEY.file_hash, BS)] == 1
    assert KEY != ImageKey(KEY.file_hash, BS * 2)
    with pytest.raises(AttributeError):
        KEY.block_size = 1  # type: ignore[misc]
    assert KEY.file_name() == f"{KEY.file_hash.hex()}-64.blocks"


def test_two_devices_share_one_copy() -> None:
    store = BlockStore()
    first = bytes(_block(3))  # two distinct but equal objects
    second = bytes(bytearray(_block(3)))
    assert first is not second
    assert store.put(KEY, 3, first)
    assert store.put(KEY, 3, second)
    assert store.get(KEY, 3) is first  # only the first is kept
    assert store.nbytes == BS
    assert store.block_count(KEY) == 1


def test_differing_data_returns_false_and_keeps_canonical() -> None:
    store = BlockStore()
    assert store.put(KEY, 0, _block(0))
    assert not store.put(KEY, 0, b"x" * BS)
    assert store.get(KEY, 0) == _block(0)


def test_get_absent() -> None:
    store = BlockStore()
    assert store.get(KEY, 0) is None
    store.put(KEY, 5, _block(5))
    assert store.get(KEY, 4) is None
    assert store.get(KEY, 6) is None
    assert store.get(KEY, -1) is None
    assert KEY in store and len(store) == 1


def test_put_rejects_bad_arguments() -> None:
    store = BlockStore()
    store.put(KEY, 2, _block(2))
    with pytest.raises(ValueError):
        store.put(KEY, -1, b"x")
    with pytest.raises(ValueError):
        store.put(KEY, 0, b"x" * (BS + 1))
    with pytest.raises(ValueError):
        store.put(KEY, 1 << 30, b"x")


def test_assemble_and_verify() -> None:
    store = BlockStore()
    _put_all(store)
    assert store.assemble(KEY, NBLOCKS, len(FILE)) == FILE
    assert store.verify(KEY, NBLOCKS, len(FILE))


def test_assemble_with_overrides() -> None:
    store = BlockStore()
    _put_all(store)
    patched = b"P" * BS
    out = store.assemble(KEY, NBLOCKS, len(FILE), {2: patched})
    assert out == FILE[: 2 * BS] + patched + FILE[3 * BS :]
    assert not store.verify(KEY, NBLOCKS, len(FILE), {2: patched})
    assert store.verify(KEY, NBLOCKS, len(FILE), {2: _block(2)})


def test_override_repairs_bad_canonical_block() -> None:
    store = BlockStore()
    assert store.put(KEY, 0, b"C" * BS)  # the first writer got a corrupt block
    for num in range(1, NBLOCKS):
        store.put(KEY, num, _block(num))
    assert not store.put(KEY, 0, _block(0))  # a good device keeps an override
    assert not store.verify(KEY, NBLOCKS, len(FILE))
    assert store.verify(KEY, NBLOCKS, len(FILE), {0: _block(0)})


def test_missing_block() -> None:
    store = BlockStore()
    for num in range(NBLOCKS):
        if num != 4:
            store.put(KEY, num, _block(num))
    with pytest.raises(MissingBlockError) as exc:
        store.assemble(KEY, NBLOCKS, len(FILE))
    assert exc.value.num == 4
    assert not store.verify(KEY, NBLOCKS, len(FILE))
    # a missing block is not cached: once it arrives the image verifies
    store.put(KEY, 4, _block(4))
    assert store.verify(KEY, NBLOCKS, len(FILE))
    # an override fills a gap too
    other = BlockStore()
    for num in range(1, NBLOCKS):
        other.put(KEY, num, _block(num))
    assert other.verify(KEY, NBLOCKS, len(FILE), {0: _block(0)})


def test_unknown_key_verifies_false() -> None:
    assert not BlockStore().verify(KEY, NBLOCKS, len(FILE))


def test_short_blocks() -> None:
    store = BlockStore()
    _put_all(store)
    with pytest.raises(MissingBlockError):
        store.assemble(KEY, NBLOCKS, len(FILE), {1: b"short"})
    with pytest.raises(MissingBlockError):
        store.assemble(KEY, NBLOCKS, len(FILE), {8: b"ta"})  # last block short
    # a padded last block is cut to the file size
    padded = {8: b"tail" + bytes(BS - 4)}
    assert store.assemble(KEY, NBLOCKS, len(FILE), padded) == FILE


def test_geometry_mismatch_is_value_error() -> None:
    store = BlockStore()
    _put_all(store)
    with pytest.raises(ValueError):
        store.assemble(KEY, NBLOCKS - 1, len(FILE))
    with pytest.raises(ValueError):
        store.verify(KEY, NBLOCKS, 0)


def test_verify_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlockStore()
    _put_all(store)
    calls = 0
    real = store.assemble

    def counting(*args: object, **kwargs: object) -> bytes:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "assemble", counting)
    for _ in range(1000):  # a thousand devices completing the same image
        assert store.verify(KEY, NBLOCKS, len(FILE))
        assert store.verify(KEY, NBLOCKS, len(FILE), {})
    assert calls == 1
    store.verify(KEY, NBLOCKS, len(FILE), {0: _block(0)})
    store.verify(KEY, NBLOCKS, len(FILE), {0: _block(0)})
    assert calls == 3  # overrides are never cached


def test_add_image() -> None:
    store = BlockStore()
    key = store.add_image(FILE, BS)
    assert key == KEY
    assert store.block_count(key) == NBLOCKS
    assert store.get(key, 8) == b"tail"
    assert store.verify(key, NBLOCKS, len(FILE))
    assert store.nbytes == len(FILE)
    assert store.put(key, 1, _block(1))  # a device downloading it shares it
    assert store.add_image(FILE, BS) == key and store.nbytes == len(FILE)
    with pytest.raises(ValueError):
        store.add_image(b"", BS)


def test_add_image_replaces_bad_block(caplog: pytest.LogCaptureFixture) -> None:
    bad = BlockStore()
    bad.put(KEY, 0, b"B" * BS)
    for num in range(1, NBLOCKS):
        bad.put(KEY, num, _block(num))
    assert not bad.verify(KEY, NBLOCKS, len(FILE))  # cached False
    with caplog.at_level(logging.WARNING):
        bad.add_image(FILE, BS)
    assert "replaced" in caplog.text
    assert bad.get(KEY, 0) == _block(0)
    assert bad.verify(KEY, NBLOCKS, len(FILE))
    assert bad.nbytes == len(FILE)


def test_discard() -> None:
    store = BlockStore()
    store.add_image(FILE, BS)
    store.discard(KEY)
    assert KEY not in store and store.nbytes == 0
    assert not store.verify(KEY, NBLOCKS, len(FILE))
    store.discard(KEY)  # harmless twice


def test_save_load_round_trip(tmp_path: Path) -> None:
    store = BlockStore()
    store.add_image(FILE, BS)
    other_file = b"other image" * 50
    other = ImageKey(hashlib.sha256(other_file).digest(), 128)
    store.put(other, 0, other_file[:128])  # a partial download
    store.put(other, 3, other_file[384:512])
    assert store.save(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [KEY.file_name(), other.file_name()]
    )
    loaded = BlockStore()
    assert loaded.load(tmp_path) == 2
    assert loaded.assemble(KEY, NBLOCKS, len(FILE)) == FILE
    assert loaded.verify(KEY, NBLOCKS, len(FILE))
    assert loaded.get(other, 0) == other_file[:128]
    assert loaded.get(other, 3) == other_file[384:512]
    assert loaded.get(other, 1) is None
    assert loaded.nbytes == store.nbytes


def test_save_is_incremental(tmp_path: Path) -> None:
    store = BlockStore()
    store.add_image(FILE, BS)
    assert store.save(tmp_path) == 1
    assert store.save(tmp_path) == 0  # nothing changed
    store.put(ImageKey(b"\1" * 32, 16), 0, b"x")
    assert store.save(tmp_path) == 1
    (tmp_path / KEY.file_name()).unlink()
    assert store.save(tmp_path) == 1  # a removed file is written again
    assert store.save(tmp_path / "elsewhere") == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_skips_corrupt_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BlockStore()
    store.add_image(FILE, BS)
    good_other = store.add_image(b"second" * 30, 32)
    store.save(tmp_path)
    path = tmp_path / KEY.file_name()
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    (tmp_path / ("00" * 32 + "-64.blocks")).write_bytes(b"MFBS")  # truncated
    renamed = tmp_path / ("11" * 32 + "-32.blocks")  # name does not match
    renamed.write_bytes((tmp_path / good_other.file_name()).read_bytes())
    loaded = BlockStore()
    with caplog.at_level(logging.WARNING):
        assert loaded.load(tmp_path) == 1
    assert KEY not in loaded and good_other in loaded
    assert caplog.text.count("skipping block file") == 3
    assert "checksum mismatch" in caplog.text
    assert "does not match" in caplog.text


def test_load_keeps_memory_on_conflict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BlockStore()
    store.add_image(FILE, BS)
    store.save(tmp_path)
    other = BlockStore()
    other.put(KEY, 0, b"M" * BS)
    with caplog.at_level(logging.WARNING):
        assert other.load(tmp_path) == 1
    assert other.get(KEY, 0) == b"M" * BS
    assert other.get(KEY, 1) == _block(1)
    assert "differs from memory" in caplog.text


def test_load_missing_directory_is_empty(tmp_path: Path) -> None:
    assert BlockStore().load(tmp_path / "nope") == 0


def test_image_key_pickles_without_its_hash() -> None:
    import copy
    import pickle

    clone = pickle.loads(pickle.dumps(KEY))
    assert clone == KEY and hash(clone) == hash(KEY)
    assert copy.deepcopy(KEY) == KEY
    assert repr(KEY).count("hash") == 1


def test_intern_returns_the_stored_key() -> None:
    store = BlockStore()
    first = ImageKey(KEY.file_hash, BS)
    assert store.intern(first) is first
    second = ImageKey(KEY.file_hash, BS)
    assert store.intern(second) is first
    assert store.put(second, 0, _block(0))
    assert store.keys() == [first]


def test_put_after_discard_starts_afresh() -> None:
    store = BlockStore()
    assert store.put(KEY, 0, _block(0))  # KEY is now put()'s cached entry
    store.discard(KEY)
    assert store.put(KEY, 0, b"new")
    assert store.get(KEY, 0) == b"new" and store.nbytes == 3
