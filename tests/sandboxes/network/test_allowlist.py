"""The allowlist parser and its presets (sandboxes.network.allowlist), on their own."""


def test_an_allowlist_is_parsed_and_judged():
    from sandboxes.network import allowlist

    entries, errors = allowlist.parse("api.example.com\n*.example.org:22,443 # git\n198.51.100.0/24:8080\n")
    assert not errors
    assert [(e.text, e.ports) for e in entries] == [("api.example.com", (443,)), ("*.example.org", (22, 443)), ("198.51.100.0/24", (8080,))]
    assert allowlist.ports_for("a.b.example.org.", entries) == (22, 443)
    assert allowlist.ports_for("example.org", entries) == ()  # a wildcard is for subdomains only
    assert allowlist.ports_for("api.example.com", entries) == (443,)
    assert allowlist.ports_for("xapi.example.com", entries) == ()
    for bad, why in [
        ("10.0.0.0/8", "no sandbox reaches"),
        ("169.254.169.254", "no sandbox reaches"),
        ("example.com:53", "port 53"),
        ("example.com:0", "from 1 to"),
        ("exa mple", "a domain"),
        ("*.*.example.com", "a domain"),
        ("ex*ample.com", "a domain"),
        ("0.0.0.0/0", "no sandbox reaches"),
        ('x.com"; rm', "a domain"),
    ]:
        assert any(why in e for e in allowlist.parse(bad)[1]), (bad, allowlist.parse(bad))
    assert allowlist.presets_errors(["claude-code", "nope"]) == ["No preset called 'nope': one of claude-code, github, packages."]
    assert "api.anthropic.com" in [e.text for e in allowlist.effective(["claude-code"], "")]
