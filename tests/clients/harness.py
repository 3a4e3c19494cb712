"""What the Python clients' scripts share: sextant's DNS answers, asked over real UDP, and an
instance's own /health endpoint for sextant to probe."""

import http.server
import threading

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype


class Dns:
    def __init__(self, addr: str, domain: str = "trading-dc"):
        host, port = addr.rsplit(":", 1)
        self.host, self.port, self.domain = host, int(port), domain

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        query = dns.message.make_query(f"{name}.service.{self.domain}.", rdtype)
        return dns.query.udp(query, self.host, port=self.port, timeout=2)

    def addresses(self, name: str) -> list[str]:
        """The A records answered for <name>.service.<domain>, sorted; [] for NXDOMAIN."""
        reply = self.query(name, "A")
        assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), dns.rcode.to_text(reply.rcode())
        return sorted(rr.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset)

    def ports(self, name: str) -> list[int]:
        reply = self.query(name, "SRV")
        return sorted(rr.port for rrset in reply.answer if rrset.rdtype == dns.rdatatype.SRV for rr in rrset)

    def rcode(self, name: str) -> str:
        return dns.rcode.to_text(self.query(name, "A").rcode())


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def health_endpoint() -> http.server.ThreadingHTTPServer:
    """An HTTP server on a free loopback port answering 200 on /health, running in a thread;
    `.server_port` is its port, `.shutdown()` stops it."""
    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    return endpoint
