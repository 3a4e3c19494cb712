"""What the Python clients' scripts ask sextant's DNS server, over real UDP."""

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
