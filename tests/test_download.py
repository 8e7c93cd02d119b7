"""Downloads against a real HTTP server on 127.0.0.1, started by each test."""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest

from http_server import FileServer
from micranet_utils.base.errors import DownloadError
from micranet_utils.io import registry as _registry
from micranet_utils.io import download as dl
from micranet_utils.cli import main

ARCHIVE_URL = "/flclab-micranet/MICRA-Net.tar.gz"
ILASTIK_URLS = ["/flclab-micranet/MICRA-Net/models-ilastik/ActinModelZoo-ilastik.hdf5",
                "/flclab-micranet/MICRA-Net/models-ilastik/CTCModelZoo-ilastik.hdf5"]
PUBLISHED = {  # tiny stand-ins for the published files, path inside the archive -> bytes
    "models/ActinModelZoo.hdf5": b"actin zoo " * 300,
    "models/CTCModelZoo.hdf5": b"ctc zoo " * 200,
    "datasets/training_01-04-19.hdf5": os.urandom(40_000),  # incompressible: a real mid-body cut
    "datasets/validation_01-04-19.hdf5": b"validation " * 100,
}
REPO = Path(__file__).resolve().parents[1]


def make_tar(members, top=""):
    """A .tar.gz in memory; `members` maps names to bytes, or to a TarInfo for special members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
                continue
            info = tarfile.TarInfo(top + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def published_files(top="MICRA-Net/"):
    return {ARCHIVE_URL: make_tar(PUBLISHED, top),
            ILASTIK_URLS[0]: b"ilastik actin", ILASTIK_URLS[1]: b"ilastik ctc"}


@pytest.fixture(autouse=True)
def quick_env(tmp_path, monkeypatch):
    """No retries, short timeouts, a fresh cache, and the once-only messages reset."""
    monkeypatch.setenv("MICRANET_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("MICRANET_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("MICRANET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MICRANET_BASE_URL", raising=False)
    monkeypatch.setattr(dl, "_WARNED", set())
    monkeypatch.setattr(dl, "_NOTE_SHOWN", False)
    monkeypatch.setattr("pooch.core.time.sleep", lambda seconds: None)  # pooch waits between retries


@pytest.fixture
def server(monkeypatch):
    with FileServer(published_files()) as running:
        monkeypatch.setenv("MICRANET_BASE_URL", running.url)
        yield running


def home(tmp_path):
    return tmp_path / "home"


def assert_published_tree(tree):
    for name, content in PUBLISHED.items():
        assert (tree / name).read_bytes() == content
    assert (tree / "models-ilastik" / "ActinModelZoo-ilastik.hdf5").read_bytes() == b"ilastik actin"


def leftovers(folder):
    """Anything a failed download or extraction could leave: archive, parts, scratch folders, tree."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != ".download.lock")


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- settings ---------------------------------------------------------------------------------

def test_home_and_base_url_come_from_the_environment(tmp_path, monkeypatch):
    assert dl.micranet_home() == home(tmp_path)
    monkeypatch.delenv("MICRANET_HOME")
    assert dl.micranet_home().name == "micranet"
    assert dl.base_url() == "https://s3.valeria.science"
    assert dl.published_url("MICRA-Net.tar.gz") == "https://s3.valeria.science/flclab-micranet/MICRA-Net.tar.gz"
    monkeypatch.setenv("MICRANET_BASE_URL", "http://127.0.0.1:8000/")
    assert dl.published_url("MICRA-Net.tar.gz") == "http://127.0.0.1:8000/flclab-micranet/MICRA-Net.tar.gz"
    monkeypatch.setenv("MICRANET_BASE_URL", "127.0.0.1:8000")
    with pytest.raises(DownloadError, match="MICRANET_BASE_URL='127.0.0.1:8000'"):
        dl.base_url()


def test_unknown_what_and_kind_are_refused(tmp_path):
    with pytest.raises(DownloadError, match="what='weights'"):
        dl.fetch_published("weights")
    with pytest.raises(DownloadError, match="kind='zoo'"):
        dl.published_path("zoo", "ActinModelZoo.hdf5")
    with pytest.raises(DownloadError, match="plain file name"):
        dl.published_path("models", "../ActinModelZoo.hdf5")
    with pytest.raises(DownloadError, match="name='../x': not a published file"):
        dl.download_file("../x")


# -- the published layout ---------------------------------------------------------------------

@pytest.mark.parametrize("top", ["MICRA-Net/", ""], ids=["with-top-folder", "without-top-folder"])
def test_fetch_all_fills_home_in_published_layout(tmp_path, server, top):
    server.files.update(published_files(top))
    with pytest.warns(dl.UnverifiedDownloadWarning):
        tree = dl.fetch_published("all", progress=False)
    assert tree == home(tmp_path) / "MICRA-Net"
    assert_published_tree(tree)
    record = json.loads((tree / ".micranet-archive.json").read_text())
    assert record["sha256"] == hashlib.sha256(server.files[ARCHIVE_URL]).hexdigest()
    assert record["verified"] is False
    assert leftovers(home(tmp_path)) == ["MICRA-Net"]  # archive deleted, no part, no scratch
    served = len(server.requests)
    assert dl.fetch_published("all", progress=False) == tree
    assert len(server.requests) == served  # everything cached: no network


def test_models_and_ilastik_alone(tmp_path, server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dl.UnverifiedDownloadWarning)
        dl.fetch_published("ilastik", progress=False)
        assert not (home(tmp_path) / "MICRA-Net" / "models").exists()
        tree = dl.fetch_published("models", progress=False, keep_archive=True)
    assert_published_tree(tree)  # the archive went in beside models-ilastik/, which stayed
    assert (home(tmp_path) / "MICRA-Net.tar.gz").read_bytes() == server.files[ARCHIVE_URL]


def test_published_path_downloads_when_needed(tmp_path, server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dl.UnverifiedDownloadWarning)
        path = dl.published_path("models", "ActinModelZoo.hdf5", progress=False)
        assert path == home(tmp_path) / "MICRA-Net/models/ActinModelZoo.hdf5"
        assert path.read_bytes() == PUBLISHED["models/ActinModelZoo.hdf5"]
        with pytest.raises(DownloadError, match="no such published file.*ActinModelZoo.hdf5, CTCModelZoo"):
            dl.published_path("models", "EMModelZoo.hdf5", progress=False)


def test_archive_placed_by_hand_is_extracted_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("MICRANET_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    (home(tmp_path) / ".MICRA-Net.abc.partial" / "models").mkdir(parents=True)  # a killed extraction
    (home(tmp_path) / "MICRA-Net.tar.gz").write_bytes(make_tar(PUBLISHED))
    with pytest.warns(dl.UnverifiedDownloadWarning):
        tree = dl.fetch_published("datasets", progress=False)
    assert (tree / "datasets/training_01-04-19.hdf5").read_bytes() == PUBLISHED["datasets/training_01-04-19.hdf5"]
    assert leftovers(home(tmp_path)) == ["MICRA-Net"]


def test_licence_note_comes_before_the_first_download_only(server, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dl.UnverifiedDownloadWarning)
        dl.fetch_published("ilastik", progress=False)
        note = capsys.readouterr().out
        dl.fetch_published("models", progress=False)
    assert "Bilodeau et al." in note and "non-commercial" in note and "10.1038/s42256-022-00472-w" in note
    assert note.count("Note:") == 1 and "Note:" not in capsys.readouterr().out


# -- hashes -------------------------------------------------------------------------------------

def test_unverified_download_warns_once_with_its_hash(server):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dl.fetch_published("all", progress=False)
        dl.download_file("MICRA-Net.tar.gz", progress=False)  # downloaded again: no second warning
    messages = [str(w.message) for w in caught if w.category is dl.UnverifiedDownloadWarning]
    assert len(messages) == 3  # the archive and the two Ilastik zoos, once each
    archive_message = next(m for m in messages if m.startswith("MICRA-Net.tar.gz"))
    assert "UNVERIFIED" in archive_message and "tools/record_hashes.py" in archive_message
    assert hashlib.sha256(server.files[ARCHIVE_URL]).hexdigest() in archive_message


def test_recorded_hash_is_checked_and_a_mismatch_deleted(tmp_path, server, monkeypatch):
    good = hashlib.sha256(server.files[ARCHIVE_URL]).hexdigest()
    monkeypatch.setitem(_registry.PUBLISHED, "MICRA-Net.tar.gz", {"sha256": "0" * 64, "size": None})
    with pytest.raises(DownloadError, match="(?s)MICRA-Net.tar.gz.*does not match.*deleted"):
        dl.fetch_published("models", progress=False)
    assert leftovers(home(tmp_path)) == []
    monkeypatch.setitem(_registry.PUBLISHED, "MICRA-Net.tar.gz", {"sha256": good, "size": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error", dl.UnverifiedDownloadWarning)  # verified: no warning
        tree = dl.fetch_published("models", progress=False)
    assert json.loads((tree / ".micranet-archive.json").read_text()) == {
        "url": f"{server.url}{ARCHIVE_URL}", "sha256": good, "verified": True, "size": len(server.files[ARCHIVE_URL])}


# -- broken transfers ---------------------------------------------------------------------------

def test_truncated_download_never_looks_complete(tmp_path, server):
    server.truncate[ARCHIVE_URL] = 1000
    with pytest.raises(DownloadError, match=f"(?s){server.url}{ARCHIVE_URL}.*after 1000 B.*again to resume"):
        dl.fetch_published("models", progress=False)
    assert leftovers(home(tmp_path)) == [".MICRA-Net.tar.gz.part", ".MICRA-Net.tar.gz.part.validator"]
    assert (home(tmp_path) / ".MICRA-Net.tar.gz.part").stat().st_size == 1000


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server):
    server.truncate[ARCHIVE_URL], server.truncate_times[ARCHIVE_URL] = 5000, 1
    with pytest.raises(DownloadError):
        dl.fetch_published("models", progress=False, keep_archive=True)
    with pytest.warns(dl.UnverifiedDownloadWarning):
        tree = dl.fetch_published("models", progress=False, keep_archive=True)
    assert server.range_requests(ARCHIVE_URL) == ["bytes=5000-"]
    assert (home(tmp_path) / "MICRA-Net.tar.gz").read_bytes() == server.files[ARCHIVE_URL]
    assert (tree / "models/ActinModelZoo.hdf5").read_bytes() == PUBLISHED["models/ActinModelZoo.hdf5"]


def test_retry_resumes_within_the_same_call(server):
    server.truncate[ARCHIVE_URL], server.truncate_times[ARCHIVE_URL] = 3000, 1
    with pytest.warns(dl.UnverifiedDownloadWarning):
        tree = dl.fetch_published("models", progress=False, retries=1)
    assert server.range_requests(ARCHIVE_URL) == ["bytes=3000-"]
    assert (tree / "datasets/training_01-04-19.hdf5").read_bytes() == PUBLISHED["datasets/training_01-04-19.hdf5"]


@pytest.mark.parametrize("change", ["server-ignores-range", "file-changed-on-server"])
def test_resume_falls_back_to_a_full_download(tmp_path, server, change):
    server.truncate[ARCHIVE_URL], server.truncate_times[ARCHIVE_URL] = 2000, 1
    with pytest.raises(DownloadError):
        dl.download_file("MICRA-Net.tar.gz", progress=False)
    if change == "server-ignores-range":
        server.ignore_range = True
    else:
        server.files[ARCHIVE_URL] = make_tar({"models/New.hdf5": b"new"})
    with pytest.warns(dl.UnverifiedDownloadWarning):
        path = dl.download_file("MICRA-Net.tar.gz", progress=False)
    assert path.read_bytes() == server.files[ARCHIVE_URL]
    assert not (home(tmp_path) / ".MICRA-Net.tar.gz.part").exists()


def test_stale_part_longer_than_the_file_is_thrown_away(tmp_path, server):
    home(tmp_path).mkdir()
    (home(tmp_path) / ".CTCModelZoo-ilastik.hdf5.part").write_bytes(b"x" * 100)  # server answers 416
    with pytest.warns(dl.UnverifiedDownloadWarning):
        dl.fetch_published("ilastik", progress=False)
    assert (home(tmp_path) / "MICRA-Net/models-ilastik/CTCModelZoo-ilastik.hdf5").read_bytes() == b"ilastik ctc"


@pytest.mark.parametrize("status, words", [(404, "404 Not Found"), (500, "500 Internal Server Error")])
def test_http_errors_name_the_url_and_the_status(tmp_path, server, status, words):
    server.status[ILASTIK_URLS[1]] = status
    expected = f"{server.url}{ILASTIK_URLS[1]}: the server .*{words}"
    with pytest.warns(dl.UnverifiedDownloadWarning, match="ActinModelZoo-ilastik"), \
            pytest.raises(DownloadError, match=expected):
        dl.fetch_published("ilastik", progress=False)
    assert not (home(tmp_path) / "MICRA-Net/models-ilastik/CTCModelZoo-ilastik.hdf5").exists()


def test_no_server_explains_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MICRANET_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(DownloadError) as caught:
        dl.fetch_published("all", progress=False)
    message = str(caught.value)
    assert "cannot reach http://127.0.0.1:" in message and "connection refused" in message
    assert "MICRANET_BASE_URL" in message and str(home(tmp_path) / "MICRA-Net.tar.gz") in message
    assert "https://s3.valeria.science/flclab-micranet/MICRA-Net.tar.gz on a connected computer" in message
    assert leftovers(home(tmp_path)) == []


def test_silent_server_times_out_with_the_same_advice(tmp_path, monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        monkeypatch.setenv("MICRANET_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(DownloadError, match=r"cannot reach .*\(no answer within 0.3 s\).*MICRANET_BASE_URL"):
            dl.fetch_published("ilastik", progress=False, timeout=0.3)


def test_connection_that_hangs_mid_file_keeps_the_part(tmp_path, server):
    server.stall[ILASTIK_URLS[0]] = 5
    server.files[ILASTIK_URLS[0]] = b"0123456789" * 10
    with pytest.raises(DownloadError, match="connection broke after 5 B of 100 B.*again to resume"):
        dl.fetch_published("ilastik", progress=False, timeout=0.3)
    folder = home(tmp_path) / "MICRA-Net" / "models-ilastik"
    assert (folder / ".ActinModelZoo-ilastik.hdf5.part").read_bytes() == b"01234"
    assert not (folder / "ActinModelZoo-ilastik.hdf5").exists()
    del server.stall[ILASTIK_URLS[0]]
    with pytest.warns(dl.UnverifiedDownloadWarning):
        dl.fetch_published("ilastik", progress=False)
    assert (folder / "ActinModelZoo-ilastik.hdf5").read_bytes() == b"0123456789" * 10
    assert server.range_requests(ILASTIK_URLS[0]) == ["bytes=5-"]


def test_a_second_process_waits_for_the_first(tmp_path, server, capsys):
    import fcntl
    import threading

    home(tmp_path).mkdir()
    with open(home(tmp_path) / ".download.lock", "w") as held:  # another process downloading
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=dl.fetch_published, args=("ilastik",), kwargs={"progress": False})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dl.UnverifiedDownloadWarning)
            worker.start()
            worker.join(0.3)
            assert worker.is_alive() and not server.requests  # blocked, nothing fetched
            fcntl.flock(held, fcntl.LOCK_UN)
            worker.join(5)
    assert not worker.is_alive()
    assert "waiting for another download" in capsys.readouterr().err
    assert (home(tmp_path) / "MICRA-Net/models-ilastik/CTCModelZoo-ilastik.hdf5").read_bytes() == b"ilastik ctc"


def test_host_name_failure_is_named_plainly():
    import requests

    from micranet_utils.io.http import _reason

    err = requests.ConnectionError("HTTPSConnectionPool(host='s3.valeria.science', port=443): Max retries exceeded "
                                   "(Caused by NameResolutionError(\"Failed to resolve 's3.valeria.science'\"))")
    assert _reason(err, 60) == "host name not found: no network, or no DNS"


def test_not_enough_disk_space_stops_before_writing(tmp_path, server, monkeypatch):
    monkeypatch.setattr("shutil.disk_usage", lambda path: _Usage(10))
    with pytest.raises(DownloadError, match="not enough free space .* to download and extract"):
        dl.fetch_published("models", progress=False)
    assert leftovers(home(tmp_path)) == []


def test_extraction_stops_when_the_disk_fills(tmp_path, monkeypatch):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar(PUBLISHED))
    monkeypatch.setattr("shutil.disk_usage", lambda path: _Usage(5000))  # room for the two small models only
    with pytest.raises(DownloadError, match="not enough free space .* to extract datasets/training_01-04-19.hdf5"):
        dl.safe_extract(archive, tmp_path / "tree")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


class _Usage:
    def __init__(self, free):
        self.free = free


# -- hostile archives ---------------------------------------------------------------------------

HOSTILE = {
    "traversal": ({"models/ok.hdf5": b"ok", "../escaped.txt": b"evil"}, "'../escaped.txt' contains '..'"),
    "absolute": ({"models/ok.hdf5": b"ok", "ABSOLUTE": b"evil"}, "has an absolute path"),
    "symlink-out": ({"models/ok.hdf5": b"ok", "models/link": special("models/link", tarfile.SYMTYPE, "../../..")},
                    "link pointing outside"),
    "hardlink-out": ({"models/ok.hdf5": b"ok", "models/hard": special("models/hard", tarfile.LNKTYPE, "/etc/passwd")},
                     "link pointing outside"),
    "device": ({"models/ok.hdf5": b"ok", "models/dev": special("models/dev", tarfile.CHRTYPE)}, "device file or FIFO"),
    "fifo": ({"models/ok.hdf5": b"ok", "models/fifo": special("models/fifo", tarfile.FIFOTYPE)}, "device file or FIFO"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path, server, case):
    members, reason = HOSTILE[case]
    outside = tmp_path / "escaped.txt"
    members = {(str(outside) if name == "ABSOLUTE" else name): content for name, content in members.items()}
    server.files[ARCHIVE_URL] = make_tar(members)
    with pytest.warns(dl.UnverifiedDownloadWarning), \
            pytest.raises(DownloadError, match=f"refused to extract.*{reason}"):
        dl.fetch_published("models", progress=False)
    assert not outside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert leftovers(home(tmp_path)) == []  # no tree, no scratch folder, and the bad archive is gone


def test_safe_extract_keeps_inner_links_and_other_entries(tmp_path):
    archive = tmp_path / "a.tar.gz"
    inner_link = special("models/b.hdf5", tarfile.SYMTYPE, "a.hdf5")
    archive.write_bytes(make_tar({"models/a.hdf5": b"a", "models/b.hdf5": inner_link}))
    destination = tmp_path / "tree"
    (destination / "models-ilastik").mkdir(parents=True)
    (destination / "models").mkdir()
    (destination / "models" / "old.hdf5").write_bytes(b"old")
    assert dl.safe_extract(archive, destination) == destination
    assert (destination / "models" / "b.hdf5").read_bytes() == b"a"
    assert not (destination / "models" / "old.hdf5").exists()  # models/ replaced as a whole
    assert (destination / "models-ilastik").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "tree"]


def test_safe_extract_reports_a_damaged_archive(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(make_tar(PUBLISHED)[:500])
    with pytest.raises(DownloadError, match="a.tar.gz: cannot extract .*damaged"):
        dl.safe_extract(archive, tmp_path / "tree")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


# -- command line ---------------------------------------------------------------------------------

def test_cli_download_all_fills_home(tmp_path, server, capsys):
    assert main(["download", "all"]) == 0  # with progress bars
    out, err = capsys.readouterr()
    assert_published_tree(home(tmp_path) / "MICRA-Net")
    assert "models/: 2 files" in out and "datasets/: 2 files" in out
    assert err.count("micranet download: warning: ") == 3 and "Traceback" not in err


def test_cli_without_network_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MICRANET_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    assert main(["download", "models", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("micranet download: error: cannot reach") and err.count("\n") == 1


def test_cli_refuses_a_hostile_archive(tmp_path, server, capsys):
    server.files[ARCHIVE_URL] = make_tar(HOSTILE["traversal"][0])
    assert main(["download", "datasets", "--no-progress"]) == 2
    assert "refused to extract" in capsys.readouterr().err
    assert not (tmp_path / "escaped.txt").exists()


def test_console_script_downloads_all(tmp_path, server):
    script = Path(sys.executable).with_name("micranet")
    if not script.exists():
        pytest.skip(f"{script} is not installed")
    env = {**os.environ, "MICRANET_BASE_URL": server.url, "MICRANET_HOME": str(tmp_path / "cli-home")}
    done = subprocess.run([str(script), "download", "all", "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert_published_tree(tmp_path / "cli-home" / "MICRA-Net")
    assert "10.1038/s42256-022-00472-w" in done.stdout


# -- the maintenance command ----------------------------------------------------------------------

def test_record_hashes_writes_a_registry_that_then_verifies(tmp_path, server, monkeypatch, capsys):
    import copy
    import importlib.util

    spec = importlib.util.spec_from_file_location("record_hashes", REPO / "tools" / "record_hashes.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(_registry, "PUBLISHED", copy.deepcopy(_registry.PUBLISHED))
    registry = tmp_path / "registry.py"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dl.UnverifiedDownloadWarning)
        assert tool.main(["--home", str(tmp_path / "record"), "--registry", str(registry), "--no-progress"]) == 0
    recorded = {}
    exec(registry.read_text(), recorded)
    assert recorded["__doc__"] == _registry.__doc__
    assert recorded["PUBLISHED"]["MICRA-Net.tar.gz"] == {
        "sha256": hashlib.sha256(server.files[ARCHIVE_URL]).hexdigest(), "size": len(server.files[ARCHIVE_URL])}
    assert set(recorded["PUBLISHED"]) == {"MICRA-Net.tar.gz", *[u.split("flclab-micranet/")[1] for u in ILASTIK_URLS]}
    monkeypatch.setattr(_registry, "PUBLISHED", recorded["PUBLISHED"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", dl.UnverifiedDownloadWarning)  # every file now verified
        tree = dl.fetch_published("all", progress=False)
    assert json.loads((tree / ".micranet-archive.json").read_text())["verified"] is True
    assert tool.main(["--from-folder", str(tmp_path / "record"), "--dry-run"]) == 0
    assert recorded["PUBLISHED"]["MICRA-Net.tar.gz"]["sha256"] in capsys.readouterr().out
