//! Static zones: every `*.zone` file in the zones folder, parsed with hickory's master-file parser
//! and served by hickory's `Catalog`, which answers the names that are not the registry's. The
//! served domain always has a zone; without a file its SOA and NS are synthesized.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Header, Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_proto::serialize::txt::Parser;
use hickory_server::net::NetError;
use hickory_server::net::runtime::{TokioRuntimeProvider, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponse, ZoneHandler, ZoneType};

use super::message::{TYPE_ANY, Transport, cap_negative_soa_ttls, keep_question_case, question_end};
use super::names::ZoneName;
use super::wire::{Owner, WireCompiler, WireRecords};

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("cannot read zone file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid zone file {path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A reload found no zone file where the running server has some: the folder was moved or
    /// emptied, which is more likely a mistake than a wish to serve no static records.
    #[error("no zone file in {dir} (the running server serves {loaded}); not reloading")]
    NoFilesLeft { dir: PathBuf, loaded: usize },
}

/// The loaded zones, and the SOAs of the zones the registry's answers are written in.
pub struct Zones {
    catalog: Catalog,
    /// The served domain: the authority of the registry's negative answers.
    domain: Authority,
    /// The reverse zones answered from the registry, the most specific first.
    reverse: Vec<Authority>,
    pub files: Vec<PathBuf>,
    /// What a user should hear about the files loaded (a missing folder, a file named for
    /// another origin), for the log.
    pub warnings: Vec<String>,
}

/// A zone whose SOA is the authority of the negative answers written for names in it.
pub struct Authority {
    pub name: ZoneName,
    /// The SOA, its TTL already lowered to the negative-caching TTL (RFC 2308 §5).
    pub soa: WireRecords,
}

impl Zones {
    /// The served domain's authority, or reverse zone `reverse`'s (an index into
    /// [`reverse_zones`](Self::reverse_zones)).
    pub fn authority(&self, reverse: Option<usize>) -> &Authority {
        reverse.and_then(|i| self.reverse.get(i)).unwrap_or(&self.domain)
    }

    /// The reverse zones answered from the registry, the most specific first. The same for
    /// every load from one [`ZoneSource`].
    pub fn reverse_zones(&self) -> Vec<ZoneName> {
        self.reverse.iter().map(|zone| zone.name.clone()).collect()
    }

    /// Whether `name` is in a zone sextant serves (the domain, a zone file, a reverse zone).
    pub fn serves(&self, name: &Name) -> bool {
        self.catalog.find(&LowerName::new(name)).is_some()
    }

    /// The zone data's response to `query` (a standard query, class IN, its name not the
    /// registry's): records, NXDOMAIN, or REFUSED outside every zone. UDP responses are cut to
    /// the client's buffer and `max_udp_size`, less `room` bytes left for an option the caller
    /// adds. `None` when there is nothing to send.
    pub async fn answer(
        &self,
        query: &[u8],
        src: SocketAddr,
        transport: Transport,
        max_udp_size: u16,
        room: u16,
    ) -> Option<Vec<u8>> {
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let request = Request::from_bytes(query.to_vec(), src, protocol).ok()?;
        let capture = Capture {
            transport,
            max_udp_size,
            room,
            bytes: Arc::new(Mutex::new(None)),
        };
        self.catalog
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        let response = capture.bytes.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        let asked_any = question_end(query).is_some_and(|end| query[end - 4..end - 2] == TYPE_ANY.to_be_bytes());
        Some(if asked_any { one_rrset(response) } else { response })
    }
}

/// RFC 8482: a response to ANY cut to its first RRset (a name's every record would make ANY the
/// amplifier of choice). A response that does not decode or encode again is left as it was.
fn one_rrset(response: Vec<u8>) -> Vec<u8> {
    let Ok(mut message) = Message::from_vec(&response) else {
        return response;
    };
    let Some(first) = message.answers.first().map(|record| record.record_type()) else {
        return response;
    };
    if message.answers.iter().all(|record| record.record_type() == first) {
        return response;
    }
    message.answers.retain(|record| record.record_type() == first);
    message.to_vec().unwrap_or(response)
}

/// Keeps the encoded response the catalog produces, sized as hickory's own server would.
#[derive(Clone)]
struct Capture {
    transport: Transport,
    /// The largest UDP response, whatever the client's EDNS buffer.
    max_udp_size: u16,
    /// Bytes of a UDP response left free (for the cookie the engine adds).
    room: u16,
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max_size = match (self.transport, response.edns()) {
            (Transport::Tcp, _) => u16::MAX,
            (Transport::Udp, Some(edns)) => edns.max_payload().clamp(512, self.max_udp_size) - self.room,
            (Transport::Udp, None) => 512,
        };
        let id = response.metadata().id;
        let op_code = response.metadata().op_code;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max_size);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "could not encode a response; answering SERVFAIL");
                bytes = Message::error_msg(id, op_code, ResponseCode::ServFail).to_vec()?;
                let header = Header::read(&mut BinDecoder::new(&bytes))?;
                ResponseInfo::from(header)
            }
        };
        cap_negative_soa_ttls(&mut bytes);
        keep_question_case(&mut bytes);
        *self.bytes.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// Where zones come from: the files in `dir`, and what is synthesized for the served domain and
/// the reverse zones when no file defines them.
#[derive(Debug, Clone)]
pub struct ZoneSource {
    pub dir: PathBuf,
    pub domain: Name,
    pub node_addr: IpAddr,
    pub reverse_zones: Vec<Name>,
}

impl ZoneSource {
    pub fn new(dir: impl Into<PathBuf>, domain: &Name, node_addr: IpAddr) -> Self {
        Self {
            dir: dir.into(),
            domain: domain.to_lowercase(),
            node_addr,
            reverse_zones: Vec::new(),
        }
    }

    /// Reads and loads the zone files of `dir`.
    pub fn load(&self) -> Result<Zones, ZoneError> {
        let mut warnings = Vec::new();
        let mut files = Vec::new();
        match zone_files(&self.dir)? {
            None => warnings.push(format!(
                "the zones folder {} does not exist: no static records are served",
                self.dir.display()
            )),
            Some(paths) => {
                for path in paths {
                    let text = std::fs::read_to_string(&path).map_err(|source| ZoneError::Read {
                        path: path.clone(),
                        source,
                    })?;
                    files.push((path, text));
                }
            }
        }
        let mut zones = self.load_texts(files)?;
        warnings.append(&mut zones.warnings);
        zones.warnings = warnings;
        Ok(zones)
    }

    /// Loads zone files already read: each its path (whose name gives the default origin) and
    /// its text.
    pub fn load_texts(&self, files: Vec<(PathBuf, String)>) -> Result<Zones, ZoneError> {
        load(files, &self.dir, &self.domain, self.node_addr, &self.reverse_zones)
    }
}

/// The line a parse error is on, which hickory's parser does not say: the first prefix of the
/// file that fails with the same error ends on it. Only run when a file is already known to be bad.
fn failing_line(text: &str, path: &Path, origin: &Option<Name>, message: &str) -> Option<usize> {
    const MAX_LINES: usize = 20_000; // the search is quadratic; beyond this the line is not worth it
    let lines: Vec<&str> = text.lines().collect();
    (1..=lines.len().min(MAX_LINES)).find(|&n| {
        let prefix = lines[..n].join("\n") + "\n";
        Parser::new(prefix, Some(path.to_path_buf()), origin.clone())
            .parse()
            .is_err_and(|e| e.to_string() == message)
    })
}

fn load(
    texts: Vec<(PathBuf, String)>,
    dir: &Path,
    domain: &Name,
    node_addr: IpAddr,
    reverse_zones: &[Name],
) -> Result<Zones, ZoneError> {
    let mut catalog = Catalog::new();
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let mut domain_soa = None;
    let mut soas = BTreeMap::new();
    for (path, text) in texts {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let default_origin = Name::from_ascii(format!("{stem}.")).ok();
        let parse_error = |message: String| ZoneError::Parse {
            path: path.clone(),
            line: None,
            message,
        };
        let (origin, records) = Parser::new(text.clone(), Some(path.clone()), default_origin.clone())
            .parse()
            .map_err(|e| {
                let message = e.to_string();
                ZoneError::Parse {
                    line: failing_line(&text, &path, &default_origin, &message),
                    path: path.clone(),
                    message,
                }
            })?;
        let origin = origin.to_lowercase();
        if default_origin
            .as_ref()
            .is_some_and(|named| named.to_lowercase() != origin)
        {
            warnings.push(format!(
                "zone file {} is named for {stem}. but its $ORIGIN is {origin}: name it {}zone",
                path.display(),
                origin
            ));
        }
        let soa =
            soa_of(&origin, &records).ok_or_else(|| parse_error(format!("no SOA record at the origin {origin}")))?;
        if origin == domain.to_lowercase() {
            domain_soa = Some(soa.clone());
        }
        soas.insert(origin.clone(), soa);
        add_zone(&mut catalog, origin, records).map_err(parse_error)?;
        files.push(path);
    }
    let synthesis_error = |message: String| ZoneError::Parse {
        path: dir.to_path_buf(),
        line: None,
        message,
    };
    let origin = domain.to_lowercase();
    let ns_name = name_under("ns", &origin);
    let soa = match domain_soa {
        Some(soa) => soa,
        None => {
            warnings.push(format!(
                "no zone file in {} is for the served domain {origin}: its SOA and NS are made up (ns.{origin})",
                dir.display()
            ));
            let glue = match node_addr {
                IpAddr::V4(v4) => Record::from_rdata(ns_name.clone(), 3600, RData::A(A(v4))),
                IpAddr::V6(v6) => Record::from_rdata(ns_name.clone(), 3600, RData::AAAA(AAAA(v6))),
            };
            let (soa, records) = synthesized_zone(&origin, &origin, Some(glue));
            add_zone(&mut catalog, origin.clone(), records).map_err(synthesis_error)?;
            soa
        }
    };
    // A reverse zone without a file gets the domain's name server and hostmaster.
    let mut reverse = Vec::new();
    for zone in reverse_zones {
        let zone = zone.to_lowercase();
        let soa = match soas.get(&zone) {
            Some(soa) => soa.clone(),
            None => {
                let (soa, records) = synthesized_zone(&zone, &origin, None);
                add_zone(&mut catalog, zone.clone(), records).map_err(synthesis_error)?;
                soa
            }
        };
        reverse.push((zone, soa));
    }
    // The most specific zone first, so that the first zone found to hold a name is its zone.
    reverse.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.num_labels()));
    Ok(Zones {
        catalog,
        domain: authority(&origin, &soa),
        reverse: reverse.iter().map(|(zone, soa)| authority(zone, soa)).collect(),
        files,
        warnings,
    })
}

/// A zone's name and negative SOA, compiled for the answer writer.
fn authority(zone: &Name, soa: &Record) -> Authority {
    Authority {
        name: ZoneName::new(zone),
        soa: WireCompiler::new(zone).compile([soa], Owner::OwnName),
    }
}

fn name_under(label: &str, origin: &Name) -> Name {
    Name::from_ascii(label)
        .and_then(|n| n.append_domain(origin))
        .unwrap_or_else(|_| origin.clone())
}

/// The `*.zone` files of `dir`, sorted; `None` when the folder does not exist.
fn zone_files(dir: &Path) -> Result<Option<Vec<PathBuf>>, ZoneError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ZoneError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "zone") && p.is_file())
        .collect();
    files.sort();
    Ok(Some(files))
}

fn soa_of(origin: &Name, records: &BTreeMap<RrKey, RecordSet>) -> Option<Record> {
    let rrset = records.get(&RrKey::new(LowerName::new(origin), RecordType::SOA))?;
    let record = rrset.records_without_rrsigs().next()?;
    let RData::SOA(soa) = &record.data else {
        return None;
    };
    let negative_ttl = record.ttl.min(soa.minimum);
    let mut negative = record.clone();
    negative.ttl = negative_ttl;
    Some(negative)
}

fn add_zone(catalog: &mut Catalog, origin: Name, records: BTreeMap<RrKey, RecordSet>) -> Result<(), String> {
    let handler =
        InMemoryZoneHandler::<TokioRuntimeProvider>::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)?;
    let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
    catalog.upsert(LowerName::new(&origin), vec![handler]);
    Ok(())
}

/// A minimal zone when no file defines it: SOA and NS naming `ns.<domain>` (with its address as
/// glue when it is inside the zone). Negative answers may be cached for 0 s: services come back
/// at any moment.
fn synthesized_zone(origin: &Name, domain: &Name, glue: Option<Record>) -> (Record, BTreeMap<RrKey, RecordSet>) {
    let ns_name = name_under("ns", domain);
    let hostmaster = name_under("hostmaster", domain);
    let soa = Record::from_rdata(
        origin.clone(),
        0,
        RData::SOA(SOA::new(ns_name.clone(), hostmaster, 1, 3600, 600, 86400, 0)),
    );
    let ns = Record::from_rdata(origin.clone(), 3600, RData::NS(NS(ns_name)));
    let mut records = BTreeMap::new();
    for record in [soa.clone(), ns].into_iter().chain(glue) {
        let key = RrKey::new(LowerName::new(&record.name), record.record_type());
        records
            .entry(key)
            .or_insert_with(|| RecordSet::new(record.name.clone(), record.record_type(), 0))
            .insert(record, 0);
    }
    (soa, records)
}
