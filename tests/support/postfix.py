"""A real Postfix on loopback for the bounce tests: Debian's postfix as a private instance.

It plays the smarthost and the mailboxes behind it, so that bounces are Postfix's own DSNs:

- `<user>@mailbox.test` is a local domain without users: Postfix accepts the message (no
  recipient check at SMTP time), local delivery finds no such user and bounces it, 5.1.1.
- `<user>@full.test` is handed to a second listener of the same instance, a "mailbox provider"
  that answers `452 4.2.2 Mailbox full`: Postfix keeps retrying and, after a second, sends a
  delay warning (a DSN with Action: delayed).
- Mail for the alias domain (bounces included) goes to the relay under test on `relay_port`;
  anything else bounces with 5.4.4: nothing leaves the machine.

The instance has its own config, queue and data directories and log file (`postfix -c DIR`),
listens on 127.0.0.1 only, and is stopped with `postfix -c DIR stop`; the system has no Postfix
running (`make tools` installs it with debconf's "No configuration").
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.net import free_port

POSTFIX_HINT = "postfix not found: `make tools` installs Debian's postfix"
LOCAL_DOMAIN = "mailbox.test"
FULL_DOMAIN = "full.test"

# One line per service, chroot off (the instance's files live outside any chroot).
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class LoopbackPostfix:
    """One private Postfix instance: its SMTP listener at 127.0.0.1:`port`."""

    def __init__(self, *, alias_domain: str, relay_port: int) -> None:
        # Its own directory under the system's temporary one: Postfix's unprivileged processes
        # must traverse every parent, and pytest's temporary directories are private (0700).
        self.directory = Path(tempfile.mkdtemp(prefix="ct-postfix-"))
        self.alias_domain = alias_domain
        self.relay_port = relay_port
        self.port = free_port()
        self.mailbox_port = free_port()
        self.config = self.directory / "etc"
        self.log_file = self.directory / "maillog"
        self._running = False
        self._binary = "postfix"

    def start(self) -> None:
        binary = shutil.which("postfix") or shutil.which("postfix", path="/usr/sbin:/sbin")
        if binary is None:
            raise RuntimeError(POSTFIX_HINT)
        self._binary = binary
        self._write_config()
        self._postfix("check")
        self._postfix("start")
        self._running = True
        for port in (self.port, self.mailbox_port):
            self._wait_until_listening(port)

    def stop(self) -> None:
        if self._running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._postfix("stop")
            self._running = False
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _postfix(self, command: str) -> None:
        subprocess.run(
            [self._binary, "-c", str(self.config), command],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _write_config(self) -> None:
        self.config.mkdir(parents=True, exist_ok=True)
        queue, data = self.directory / "queue", self.directory / "data"
        # Postfix wants its queue root-owned and world-searchable (it makes the subdirectories
        # itself), and its data directory its own.
        self.directory.chmod(0o755)
        queue.mkdir(mode=0o755, exist_ok=True)
        data.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(data, "postfix", "postfix")
        domain = self.alias_domain
        relay = f"smtp:[127.0.0.1]:{self.relay_port}"
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(queue),
            "data_directory": str(data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "smarthost.test",
            "mydomain": "smarthost.test",
            "myorigin": "smarthost.test",
            "mydestination": LOCAL_DOMAIN,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            # Accept any local user at SMTP time, so that unknown ones bounce after acceptance.
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtp_dns_support_level": "disabled",
            "smtputf8_enable": "no",
            "transport_maps": (
                f"inline:{{ {domain}={relay}, .{domain}={relay}, "
                f"{FULL_DOMAIN}=smtp:[127.0.0.1]:{self.mailbox_port} }}"
            ),
            "default_transport": "error:5.4.4 no route off this test machine",
            # Retry deferred mail every second, and warn the sender after a second of delay.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "1s",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.directory),
        }
        (self.config / "main.cf").write_text(
            "".join(f"{name} = {value}\n" for name, value in main.items()), encoding="utf-8"
        )
        full_access = self.config / "full_access"
        full_access.write_text(f"{FULL_DOMAIN} 452 4.2.2 Mailbox full\n", encoding="utf-8")
        full = f"texthash:{full_access}"
        listeners = (
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
            f"127.0.0.1:{self.mailbox_port} inet n - n - - smtpd\n"
            f"  -o myhostname=mx.{FULL_DOMAIN}\n"
            f"  -o smtpd_recipient_restrictions=check_recipient_access,{full}\n"
        )
        (self.config / "master.cf").write_text(listeners + _SERVICES, encoding="utf-8")

    def _wait_until_listening(self, port: int, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock,
            ):
                if sock.recv(512).startswith(b"220"):
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"postfix did not answer on 127.0.0.1:{port}; log:\n{self.log()[-2000:]}"
        )
