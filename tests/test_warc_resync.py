"""The WARC reader resynchronises after a corrupt record: on the shared WARC sample (one gzip member per record),
each kind of damage to one record loses that record only, and the problem is reported with the file, the record's
number and its line in the decompressed file. The truth (the records and where they start) comes from splitting
the gzip members with zlib directly, not from the reader under test."""
import gzip
import zlib

import pytest

from nanotrain.errors import DataError
from nanotrain.extract import iter_warc, read_documents

SAMPLE = "sample-0000.warc.gz"
BAD = 19  # a response record (an HTML page) in the middle of the file's 48


def members(raw: bytes) -> list[bytes]:
    """The decompressed gzip members of a file, one per WARC record."""
    out = []
    while raw:
        d = zlib.decompressobj(wbits=31)
        out.append(d.decompress(raw))
        raw = d.unused_data
    return out


def record_id(record: bytes) -> str:
    head = record.split(b"\r\n\r\n", 1)[0].decode()
    return next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.startswith("WARC-Record-ID:"))


def damage(record: bytes, how: str) -> bytes:
    head, sep, rest = record.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length:")).split(b":")[1])
    set_length = lambda n: head.replace(b"Content-Length: %d" % length, b"Content-Length: %s" % n)  # noqa: E731
    if how == "length_too_long":  # swallows the next record, and does not end where a record should
        return set_length(b"%d" % (length + 5000)) + sep + rest
    if how == "length_too_short":
        return set_length(b"%d" % (length - 300)) + sep + rest
    if how == "length_not_a_number":
        return set_length(b"12x4") + sep + rest
    if how == "truncated_body":  # the block cut short, the header unchanged
        return head + sep + rest[:length // 2]
    if how == "garbage_version_line":  # the first line of the record overwritten
        return b"\x00\x13garbage" + head[8:] + sep + rest
    if how == "garbage_header_line":
        return head.replace(b"\r\nWARC-Date:", b"\r\n\xfe\xff no colon here\r\nWARC-Date:") + sep + rest
    raise ValueError(how)


@pytest.fixture(scope="module")
def sample(shared_data):
    records = members((shared_data / "web_warc_dolma" / SAMPLE).read_bytes())
    assert len(records) == 48 and all(r.startswith(b"WARC/1.0\r\n") for r in records)
    return records


def check(path, records, bad: int, expect_line: int, message: str):
    issues, counts = [], {}
    got = [r.headers["warc-record-id"] for r in iter_warc(path, issues, counts=counts)]
    want = [record_id(r) for i, r in enumerate(records, 1) if i != bad]
    assert got == want  # every other record, in order
    assert len(issues) == 1 and counts["corrupt records skipped"] == 1
    issue = issues[0]
    assert issue.path == str(path) and issue.line == expect_line
    assert issue.problem.startswith(f"corrupt WARC record {bad}: ") and message in issue.problem, issue.problem
    # the numbers of the other records do not move: document origins are the same as in the undamaged file
    docs = [d.origin.rsplit("#", 1)[1] for d in read_documents([str(path)], [])]
    pages = [str(n) for n in range(3, 46, 2)]  # the records that are HTML pages: every response of the sample
    assert docs == [n for n in pages if n != str(bad)]
    with pytest.raises(DataError, match=rf"{path.name}:{expect_line}: corrupt WARC record {bad}"):
        list(iter_warc(path, strict=True))


@pytest.mark.parametrize("how,message", [
    ("length_too_long", "Content-Length"), ("length_too_short", "does not end the record"),
    ("length_not_a_number", "'12x4' is not a number"), ("truncated_body", "does not end the record"),
    ("garbage_version_line", "expected a WARC/1.x record header"), ("garbage_header_line", "without a colon")])
@pytest.mark.parametrize("compressed", [True, False])
def test_one_corrupt_record_loses_that_record_only(tmp_path, sample, how, message, compressed):
    records = list(sample)
    records[BAD - 1] = damage(records[BAD - 1], how)
    line = b"".join(records[:BAD - 1]).count(b"\n") + 1  # where the damaged record starts
    path = tmp_path / ("x.warc.gz" if compressed else "x.warc")
    path.write_bytes(b"".join(map(gzip.compress, records)) if compressed else b"".join(records))
    check(path, sample, BAD, line, message)


def test_a_damaged_gzip_member_loses_that_record_only(tmp_path, sample):
    parts = [gzip.compress(r) for r in sample]
    line = b"".join(sample[:BAD - 1]).count(b"\n") + 1
    for where in ("middle", "header"):
        bad = bytearray(parts[BAD - 1])
        if where == "middle":  # flipped bytes inside the deflate data
            bad[len(bad) // 2:len(bad) // 2 + 8] = bytes(b ^ 0x5A for b in bad[len(bad) // 2:len(bad) // 2 + 8])
        else:  # a broken gzip header (compression method 7, not deflate): the member yields nothing at all
            bad[2] = 7
        path = tmp_path / f"{where}.warc.gz"
        path.write_bytes(b"".join(parts[:BAD - 1]) + bytes(bad) + b"".join(parts[BAD:]))
        check(path, sample, BAD, line, "gzip member at compressed byte")


def test_a_truncated_last_record_and_garbage_between_records(tmp_path, sample):
    path = tmp_path / "cut.warc.gz"
    whole = b"".join(gzip.compress(r) for r in sample)
    path.write_bytes(whole[:-40])  # inside the last member
    check(path, sample, 48, b"".join(sample[:47]).count(b"\n") + 1, "ends inside")
    path = tmp_path / "junk.warc"  # bytes between two records that are no record at all
    path.write_bytes(b"".join(sample[:BAD - 1]) + b"<html>stray bytes</html>\r\n" + b"".join(sample[BAD - 1:]))
    issues = []
    assert len(list(iter_warc(path, issues))) == 48
    assert len(issues) == 1 and "expected a WARC/1.x record header, found b'<html>stray" in issues[0].problem


def test_folded_header_lines_are_one_field(tmp_path, sample):
    record = sample[2].replace(b"\r\nWARC-Date:", b"\r\nWARC-Note: one\r\n  two\r\nWARC-Date:")
    path = tmp_path / "folded.warc"
    path.write_bytes(record)
    issues = []
    (rec,) = iter_warc(path, issues)
    assert rec.headers["warc-note"] == "one two" and rec.url and not issues
