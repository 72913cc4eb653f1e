"""The revocation list the authority signs: exported by one gateway, checked offline
and applied by a second gateway that knows the same device; tampered or older lists
are refused."""

import json

from test_key_backup import _config, _free_port, _sealink

from sealink import crypto
from sealink_gateway import custody
from sealink_gateway.store import Store


def _enroll(db, static):
    store = Store(db)
    token, _ = store.create_token({}, 60)
    device = store.enroll(token, crypto.x25519_base(static)).id
    store.close()
    return device


def test_a_revocation_holds_on_a_second_gateway_through_the_signed_list(tmp_path):
    a = _config(tmp_path / "a", _free_port())
    b = _config(tmp_path / "b", _free_port())
    for config in (a, b):
        _sealink(config, "keys", "init")
    authority = custody.read_header(tmp_path / "a" / "gateway.keys")["public"]["authority"]
    statics = [crypto.random_bytes(32) for _ in range(3)]
    on_a = [_enroll(tmp_path / "a" / "gw.db", s) for s in statics]
    on_b = [_enroll(tmp_path / "b" / "gw.db", s) for s in statics]  # the same devices

    _sealink(a, "--db", str(tmp_path / "a" / "gw.db"), "device", "revoke", on_a[0],
             "--reason", "stolen")
    first = tmp_path / "list-1.cose"
    out = _sealink(a, "revocations", "export", str(first)).stdout
    assert "revocation list 1, 1 device(s)" in out
    _sealink(a, "--db", str(tmp_path / "a" / "gw.db"), "device", "revoke", on_a[2])
    second = tmp_path / "list-2.cose"
    _sealink(a, "revocations", "export", str(second))

    # Anyone with the authority's public key checks it offline.
    doc = json.loads(_sealink(None, "revocations", "verify", str(second), "--authority-key",
                              authority, "--json").stdout)
    assert doc["seq"] == 2 and [r["device_id"] for r in doc["revoked"]] == [on_a[0], on_a[2]]
    assert doc["revoked"][0]["reason"] == "stolen"
    assert doc["revoked"][0]["static_key"] == crypto.x25519_base(statics[0]).hex()

    tampered = tmp_path / "tampered.cose"
    tampered.write_bytes(second.read_bytes().replace(b"stolen", b"stolex"))
    err = _sealink(None, "revocations", "verify", str(tampered), "--authority-key",
                   authority, ok=False).stderr
    assert "the authority's signature does not verify" in err
    garbage = tmp_path / "garbage.cose"
    garbage.write_bytes(b"\x00\xff not cbor")
    err = _sealink(None, "revocations", "verify", str(garbage), "--authority-key", authority,
                   ok=False).stderr
    assert "not a COSE_Sign1 revocation list" in err
    other = custody.read_header(tmp_path / "b" / "gateway.keys")["public"]["authority"]
    err = _sealink(None, "revocations", "verify", str(second), "--authority-key", other,
                   ok=False).stderr
    assert "the authority's signature does not verify" in err

    # The second gateway applies it: the same devices are revoked there.
    out = _sealink(b, "revocations", "import", str(second), "--authority-key",
                   authority).stdout
    assert "revocation list 2: 2 device(s) revoked here" in out
    store = Store(tmp_path / "b" / "gw.db")
    assert [store.device(d).status for d in on_b] == ["revoked", "active", "revoked"]
    store.close()
    # An older list (or the same one again) cannot be imported after it.
    err = _sealink(b, "revocations", "import", str(first), "--authority-key", authority,
                   ok=False).stderr
    assert "revocation list 1 is not newer than the last one seen (2)" in err
    err = _sealink(b, "revocations", "import", str(tampered), "--authority-key", authority,
                   ok=False).stderr
    assert "signature does not verify" in err
    events = [e["event"] for e in Store(tmp_path / "b" / "gw.db").audit_log()]
    assert events[:3] == ["revocations.import_refused", "revocations.import_refused",
                          "revocations.import"]
