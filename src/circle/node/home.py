"""A device's data directory: identity, at-rest keys, and its circles.

Layout (DESIGN §5):

    HOME/device.json             identity and at-rest key settings (0600)
    HOME/circles/<id>/circle.json   name, epoch keys (sealed at rest), settings
    HOME/circles/<id>/doc/          the document store (snapshot + log)

At rest: one random 32-byte *data key* per home seals the identity's secret
keys, the epoch keys and the document. With a passphrase, the data key is
wrapped under argon2id(passphrase) and never written in the clear; without
one, it sits in device.json protected only by file permissions, and every
status screen says so.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
import platformdirs

from circle.crdt.store import (
    Cipher,
    PlainCipher,
    SecretBoxCipher,
    atomic_write,
    os_error_sentence,
    read_regular,
)
from circle.errors import (
    NotFound,
    PassphraseRequired,
    StoreCorrupt,
    StoreError,
    UsageError,
    WrongPassphrase,
)
from circle.net.keys import DeviceIdentity, EpochKey, Purpose, keyed_hash

HOME_ENV = "CIRCLE_HOME"
PASSPHRASE_ENV = "CIRCLE_PASSPHRASE"
DEVICE_FILE = "device.json"
FORMAT_VERSION = 1
# MODERATE limits (256 MiB, 3 passes): every CLI command pays this once
# (measured in docs/storage.md), and a seized laptop's passphrase costs an
# attacker that much per guess. Stored per home, so older homes keep opening
# and the level can be raised later.
KDF_OPS = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
KDF_MEM = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
MIN_PASSPHRASE = 12


def default_home() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("circle", appauthor=False))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise StoreCorrupt(f"{what} is missing or not text in {DEVICE_FILE}")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise StoreCorrupt(f"{what} is not valid base64 in {DEVICE_FILE}") from None


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(read_regular(path, what).decode("utf-8"))
    except FileNotFoundError:
        raise NotFound(f"{what} not found at {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StoreCorrupt(f"{path} is damaged or not a circle file ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise StoreCorrupt(f"{path} is not a circle file")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class Home:
    path: Path
    identity: DeviceIdentity
    data_key: bytes
    encrypted: bool

    # --- creation / opening ----------------------------------------------

    @staticmethod
    def exists(path: Path) -> bool:
        try:
            (path / DEVICE_FILE).stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(os_error_sentence(exc, path / DEVICE_FILE)) from None
        return True

    @classmethod
    def create(cls, path: Path, passphrase: str | None) -> Home:
        if cls.exists(path):
            raise StoreError(f"{path} already holds a circle device identity")
        if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
            raise UsageError(f"a passphrase must have at least {MIN_PASSPHRASE} characters "
                             "(several words are easiest to remember)")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        identity = DeviceIdentity.generate()
        data_key = nacl.utils.random(32)
        record: dict[str, Any] = {"format": FORMAT_VERSION}
        if passphrase is None:
            record["data_key"] = _b64(data_key)
            # Public keys name the member (its id is their fingerprint): in clear only without a passphrase.
            record["verify_key"] = _b64(identity.verify_key)
            record["box_key"] = _b64(identity.box_public)
        else:
            salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
            kek = nacl.pwhash.argon2id.kdf(32, passphrase.encode(), salt, opslimit=KDF_OPS, memlimit=KDF_MEM)
            record["kdf"] = {"name": "argon2id", "salt": _b64(salt), "ops": KDF_OPS, "mem": KDF_MEM}
            record["wrapped_data_key"] = _b64(nacl.secret.SecretBox(kek).encrypt(data_key))
        home = cls(path, identity, data_key, passphrase is not None)
        record["identity"] = _b64(home.seal(identity.secret_bytes()))
        write_json(path / DEVICE_FILE, record)
        (path / "circles").mkdir(exist_ok=True, mode=0o700)
        return home

    @classmethod
    def open(cls, path: Path, passphrase: str | None) -> Home:
        record = read_json(path / DEVICE_FILE, "no circle device identity (run `circle init` or `circle join`)")
        if record.get("format") != FORMAT_VERSION:
            raise StoreCorrupt(f"{path / DEVICE_FILE} has an unknown format; upgrade circle")
        if "wrapped_data_key" in record:
            if passphrase is None:
                raise PassphraseRequired(
                    "this device's data is encrypted: give the passphrase (prompt, --passphrase-file "
                    f"or {PASSPHRASE_ENV})"
                )
            kdf = record.get("kdf")
            if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
                raise StoreCorrupt(f"{path / DEVICE_FILE} names an unknown key derivation")
            try:
                kek = nacl.pwhash.argon2id.kdf(
                    32, passphrase.encode(), _unb64(kdf.get("salt"), "kdf salt"),
                    opslimit=int(kdf["ops"]), memlimit=int(kdf["mem"]),
                )
            except (KeyError, ValueError, TypeError, nacl.exceptions.CryptoError):
                raise StoreCorrupt(f"{path / DEVICE_FILE} has damaged key derivation settings") from None
            try:
                data_key = nacl.secret.SecretBox(kek).decrypt(_unb64(record["wrapped_data_key"], "wrapped key"))
            except nacl.exceptions.CryptoError:
                raise WrongPassphrase("wrong passphrase for this device's data") from None
            encrypted = True
        else:
            data_key = _unb64(record.get("data_key"), "data key")
            encrypted = False
        if len(data_key) != 32:
            raise StoreCorrupt(f"{path / DEVICE_FILE} holds a damaged data key")
        home = cls(path, DeviceIdentity.generate(), bytes(data_key), encrypted)
        try:
            secret = home.unseal(_unb64(record.get("identity"), "identity"))
            home.identity = DeviceIdentity.from_secret_bytes(secret)
        except (ValueError, StoreCorrupt):
            raise StoreCorrupt(f"{path / DEVICE_FILE} holds a damaged identity") from None
        if "verify_key" in record and home.identity.verify_key != _unb64(record.get("verify_key"), "verify key"):
            raise StoreCorrupt(f"{path / DEVICE_FILE} identity does not match its public key")
        return home

    # --- sealing secrets -----------------------------------------------------

    def seal(self, data: bytes) -> bytes:
        if not self.encrypted:
            return data
        return bytes(nacl.secret.SecretBox(self.data_key).encrypt(data))

    def unseal(self, data: bytes) -> bytes:
        if not self.encrypted:
            return data
        try:
            return bytes(nacl.secret.SecretBox(self.data_key).decrypt(data))
        except nacl.exceptions.CryptoError:
            raise StoreCorrupt("a sealed secret failed to open: the file is damaged") from None

    def in_clear(self) -> list[str]:
        """Exactly what this home keeps unencrypted (`circle status` lists it)."""
        if not self.encrypted:
            return ["everything: identity and circle keys, the board, members' handles and zones, peers' "
                    "addresses (no passphrase: protected only by file permissions)"]
        return [
            "each circle's random id (also its directory name) and current key epoch number (circle.json)",
            "the passphrase's salt and argon2id settings (device.json)",
            "file sizes and modification times: roughly how much and when circle was used",
            "names of damaged-* files set aside by `circle doctor` (their content stays as it was on disk)",
            "that a board view is kept for quick reads (view/board, view/seed) and its size, not what it "
            "holds",
        ]

    def config_tag(self, record: dict[str, Any]) -> bytes:
        """Keyed tag over a circle.json record (everything but the tag itself)."""
        body = json.dumps({k: v for k, v in record.items() if k != "tag"}, sort_keys=True).encode()
        return keyed_hash(self.data_key, Purpose.AT_REST, b"circle.json:" + body, size=16)

    def doc_cipher(self, circle_id: str) -> Cipher:
        """Per-circle document key, derived so one circle's files say nothing of another's.

        Without a passphrase nothing is encrypted, but the files are still
        bound (keyed tags) to this home and circle: another circle's log or
        snapshot copied in is refused."""
        binding = keyed_hash(self.data_key, Purpose.AT_REST, b"bind:" + circle_id.encode())
        if not self.encrypted:
            return PlainCipher(binding)
        return SecretBoxCipher(keyed_hash(self.data_key, Purpose.AT_REST, circle_id.encode()), binding)

    # --- circles -------------------------------------------------------------

    def circles_dir(self) -> Path:
        return self.path / "circles"

    def circle_ids(self) -> list[str]:
        d = self.circles_dir()
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if (p / "circle.json").exists())

    def circle_dir(self, circle_id: str) -> Path:
        return self.circles_dir() / circle_id


@dataclass
class CircleConfig:
    """circle.json: what this device knows about one circle besides the document."""

    circle_id: str
    name: str
    epoch: int
    epoch_keys: dict[int, EpochKey]
    settings: dict[str, Any]

    @property
    def epoch_key(self) -> EpochKey:
        return self.epoch_keys[self.epoch]

    @classmethod
    def load(cls, home: Home, circle_id: str) -> CircleConfig:
        path = home.circle_dir(circle_id) / "circle.json"
        raw = read_json(path, f"circle {circle_id}")
        # The tag binds the file to this home and this circle: another circle's
        # circle.json (or another device's) is refused, with or without a passphrase.
        if raw.get("circle_id") != circle_id or raw.get("tag") != _b64(home.config_tag(raw)):
            raise StoreCorrupt(f"{path} belongs to another circle or another device (or was edited); refusing it")
        try:
            keys = {
                int(n): EpochKey(home.unseal(_unb64(k, "epoch key")))
                for n, k in dict(raw["epoch_keys"]).items()
            }
            name = home.unseal(_unb64(raw["name"], "circle name")).decode("utf-8")
            if "sealed_settings" in raw:
                settings = json.loads(home.unseal(_unb64(raw["sealed_settings"], "settings")))
            else:
                settings = raw.get("settings", {})
            cfg = cls(str(raw["circle_id"]), name, int(raw["epoch"]), keys, dict(settings))
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            raise StoreCorrupt(f"circle {circle_id}'s circle.json is damaged") from None
        if cfg.epoch not in cfg.epoch_keys or any(len(k) != 32 for k in keys.values()):
            raise StoreCorrupt(f"circle {circle_id}'s circle.json holds damaged keys")
        return cfg

    def save(self, home: Home) -> None:
        """Write circle.json, keeping any epoch key another process added.

        Several processes share a home (the app, `circle serve`, CLI
        commands); a key must never be lost because one of them wrote an
        older view of this file."""
        path = home.circle_dir(self.circle_id) / "circle.json"
        lock = os.open(path.with_name("circle.json.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                try:
                    on_disk = CircleConfig.load(home, self.circle_id)
                except (StoreCorrupt, NotFound):
                    on_disk = None
                if on_disk is not None:
                    for number, key in on_disk.epoch_keys.items():
                        self.epoch_keys.setdefault(number, key)
            self._write(home, path)
        finally:
            os.close(lock)

    def _write(self, home: Home, path: Path) -> None:
        record: dict[str, Any] = {
            # The name is sealed too: with a passphrase, nothing on disk says what the circle is.
            "circle_id": self.circle_id, "name": _b64(home.seal(self.name.encode("utf-8"))), "epoch": self.epoch,
            "epoch_keys": {str(n): _b64(home.seal(k)) for n, k in self.epoch_keys.items()},
            "encrypted_at_rest": home.encrypted,
        }
        if home.encrypted:
            # Peers' handles, member ids, addresses and last-seen times: the social graph.
            record["sealed_settings"] = _b64(home.seal(json.dumps(self.settings, sort_keys=True).encode()))
        else:
            record["settings"] = self.settings
        record["tag"] = _b64(home.config_tag(record))
        write_json(path, record)
