"""Where an ingest may read (``[mlops] allowed_sources``) and how much (limits), decided without Airflow."""

from __future__ import annotations

import os

import pytest

from airflow_mlops.data.sources import (
    SourceLimits,
    SourceNotAllowedError,
    SourceTooLargeError,
    check_source_allowed,
    parse_allowed_sources,
)


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    (root / "churn").mkdir(parents=True)
    (root / "churn" / "a.csv").write_text("x,label\n1,0\n")
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    return root


def test_a_local_source_inside_a_root_is_allowed_and_one_outside_is_refused(landing, tmp_path):
    allowed = parse_allowed_sources(str(landing))

    assert check_source_allowed(str(landing / "churn" / "a.csv"), allowed) == str(landing / "churn" / "a.csv")
    assert check_source_allowed(str(landing / "churn" / "*.csv"), allowed) == str(landing / "churn" / "*.csv")
    with pytest.raises(SourceNotAllowedError) as info:
        check_source_allowed(str(tmp_path / "secret.csv"), allowed)
    assert str(info.value) == (
        f"source {tmp_path / 'secret.csv'} is outside the allowed sources ({landing}); an administrator "
        "allows more in [mlops] allowed_sources"
    )


def test_a_root_is_not_a_name_prefix(landing, tmp_path):
    (tmp_path / "landing-private").mkdir()
    with pytest.raises(SourceNotAllowedError):
        check_source_allowed(str(tmp_path / "landing-private" / "x.csv"), parse_allowed_sources(str(landing)))


def test_dot_dot_and_symlinks_are_resolved_before_matching(landing, tmp_path):
    allowed = parse_allowed_sources(str(landing))
    escape = f"{landing}/churn/../../secret.csv"
    with pytest.raises(
        SourceNotAllowedError, match=rf"source {escape} \(resolved: {tmp_path / 'secret.csv'}\)"
    ):
        check_source_allowed(escape, allowed)

    os.symlink(tmp_path / "secret.csv", landing / "churn" / "link.csv")
    with pytest.raises(SourceNotAllowedError, match="is outside the allowed sources"):
        check_source_allowed(str(landing / "churn" / "link.csv"), allowed)
    os.symlink(tmp_path, landing / "up")
    with pytest.raises(SourceNotAllowedError, match="is outside the allowed sources"):
        check_source_allowed(str(landing / "up" / "*.csv"), allowed)


def test_an_allowed_root_behind_a_symlink_matches_its_target(landing, tmp_path):
    os.symlink(landing, tmp_path / "alias")
    allowed = parse_allowed_sources(str(tmp_path / "alias"))
    assert allowed == [str(landing)]
    assert check_source_allowed(str(landing / "churn" / "a.csv"), allowed)


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("s3://ml-landing/churn", True),
        ("s3://ml-landing/churn/", True),
        ("s3://ml-landing/churn/2026/*.parquet", True),
        ("s3://team-a/exports/x.parquet", True),
        ("s3://ml-landing/churn-private/x.csv", False),
        ("s3://ml-landing/other/x.csv", False),
        ("s3://other-bucket/churn/x.csv", False),
        ("s3://team-a/private/x.parquet", False),
    ],
)
def test_s3_sources_match_prefixes_and_globs(source, ok):
    allowed = parse_allowed_sources("s3://ml-landing/churn/, s3://team-*/exports")
    assert allowed == ["s3://ml-landing/churn", "s3://team-*/exports"]
    if ok:
        assert check_source_allowed(source, allowed) == source
    else:
        with pytest.raises(SourceNotAllowedError, match="s3://ml-landing/churn, s3://team-\\*/exports"):
            check_source_allowed(source, allowed)


def test_an_s3_key_with_dot_dot_is_refused():
    with pytest.raises(SourceNotAllowedError, match=r"has a '\.' or '\.\.' part"):
        check_source_allowed("s3://ml-landing/churn/../secrets/x.csv", ["s3://ml-landing/churn"])


def test_local_roots_do_not_allow_s3_and_s3_patterns_do_not_allow_local_paths(landing):
    with pytest.raises(SourceNotAllowedError):
        check_source_allowed("s3://any/x.csv", parse_allowed_sources(str(landing)))
    with pytest.raises(SourceNotAllowedError):
        check_source_allowed(str(landing / "churn" / "a.csv"), parse_allowed_sources("s3://*"))


def test_the_default_is_the_data_root_and_the_demo_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("MLOPS_SOURCE_PATH", str(tmp_path / "incoming" / "customers.csv"))
    assert parse_allowed_sources("") == [str(tmp_path / "root"), str(tmp_path / "incoming")]

    monkeypatch.setenv("MLOPS_SOURCE_PATH", "s3://landing/churn/customers.csv")
    assert parse_allowed_sources(" ") == [str(tmp_path / "root"), "s3://landing/churn"]

    monkeypatch.delenv("MLOPS_SOURCE_PATH")
    monkeypatch.chdir(tmp_path)
    assert parse_allowed_sources(None) == [str(tmp_path / "root"), str(tmp_path / "data")]
    check_source_allowed("data/customers.csv", parse_allowed_sources(None))  # the example DAG's default


def test_limits_are_checked_from_the_listing():
    entries = [{"uri": f"s3://b/p/{i}.csv", "size": 600} for i in range(3)]
    SourceLimits(max_files=3, max_bytes=1800).check("s3://b/p", entries)

    with pytest.raises(SourceTooLargeError) as info:
        SourceLimits(max_files=2).check("s3://b/p", entries)
    assert str(info.value) == (
        "source s3://b/p holds 3 files, more than [mlops] max_source_files = 2; ingest a narrower folder, "
        "prefix or glob, or raise the limit"
    )
    with pytest.raises(SourceTooLargeError, match=r"holds 1\.8 KiB \(1800 bytes\) in 3 file\(s\), more than "
                       r"\[mlops\] max_source_bytes = 1\.0 KiB \(1024 bytes\)"):  # fmt: skip
        SourceLimits(max_bytes=1024).check("s3://b/p", entries)


@pytest.mark.parametrize("protocol", ["s3", "gs", "abfs", "memory"])
def test_every_object_store_is_confined_to_its_own_allowed_prefixes(protocol):
    allowed = parse_allowed_sources(f"{protocol}://landing/churn/, s3://other")

    assert allowed[0] == f"{protocol}://landing/churn"
    assert check_source_allowed(f"{protocol}://landing/churn/2026/*.csv", allowed)
    # The connection a URI names says how to reach the store, not where: it is matched without it.
    assert check_source_allowed(f"{protocol}://my_conn@landing/churn/a.csv", allowed) == (
        f"{protocol}://landing/churn/a.csv"
    )
    for outside in (f"{protocol}://landing/churn2/a.csv", f"{protocol}://secrets/a.csv", "/etc/passwd"):
        with pytest.raises(SourceNotAllowedError, match="outside the allowed sources"):
            check_source_allowed(outside, allowed)
    if protocol != "s3":  # another store's prefix allows nothing here
        with pytest.raises(SourceNotAllowedError):
            check_source_allowed(f"{protocol}://other/a.csv", allowed)
    with pytest.raises(SourceNotAllowedError, match="'.' or '..' part"):
        check_source_allowed(f"{protocol}://landing/churn/../secrets/a.csv", allowed)
