"""Escalation hooks for real: a webhook on a loopback HTTP server, a command, a dead endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from temporalio.testing import ActivityEnvironment

from activities.escalation import EscalationNotice, EscalationNotifier
from domain.report import ErrorEntry

CAUSE = ErrorEntry(code="WAL_GAP", message="segment 000000010000000000000004 is missing", hint="h")


def notice(**hooks) -> EscalationNotice:
    return EscalationNotice(drill_id="drill-x", cause=CAUSE, timeout_seconds=60,
                            how_to_decide="pitrdrill drill decide drill-x proceed|abort", **hooks)


def test_the_webhook_receives_the_escalation_as_json_and_a_dead_one_is_reported(tmp_path):
    received = []

    authorizations = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            authorizations.append((self.path, self.headers.get("Authorization")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/pitrdrill"
        out = tmp_path / "notice.json"
        result = ActivityEnvironment().run(EscalationNotifier().notify,
                                           notice(webhook=url, command=f"cat > {out}"))
        # Credentials in the URL travel as Basic auth, not as part of the host name.
        with_login = url.replace("http://", "http://pager:p%40ss@") + "?team=db"
        logged_in = ActivityEnvironment().run(EscalationNotifier().notify,
                                              notice(webhook=with_login))
    finally:
        server.shutdown()
    assert result.delivered == ["webhook", "command"] and result.failed == []
    assert received[0]["drill_id"] == "drill-x" and received[0]["cause"]["code"] == "WAL_GAP"
    assert "webhook" not in received[0]  # hooks are not echoed to the people they reach
    assert json.loads(out.read_text())["how_to_decide"].startswith("pitrdrill drill decide")
    assert logged_in.delivered == ["webhook"]
    assert authorizations == [("/pitrdrill", None),
                              ("/pitrdrill?team=db", "Basic cGFnZXI6cEBzcw==")]  # pager:p@ss

    dead = ActivityEnvironment().run(EscalationNotifier().notify,
                                     notice(webhook="http://127.0.0.1:9/", command="exit 3"))
    assert dead.delivered == [] and [f.split(":")[0] for f in dead.failed] == ["webhook", "command"]
