from adapters.os_user import host_environment


def test_host_pgbackrest_settings_never_reach_postgresql_or_pgbackrest(monkeypatch):
    monkeypatch.setenv("PGBACKREST_REPO1_PATH", "/production/repo")
    monkeypatch.setenv("PITRDRILL_KEEP", "yes")
    environment = host_environment()
    assert "PGBACKREST_REPO1_PATH" not in environment and environment["PITRDRILL_KEEP"] == "yes"
