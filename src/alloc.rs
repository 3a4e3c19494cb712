//! The memory allocator: jemalloc with one arena, for the server and for everything built on this
//! library (its tests and benches measure what the server would hold). The one-arena option is
//! compiled into jemalloc (`.cargo/config.toml`); `_RJEM_MALLOC_CONF` overrides it at run time.
//!
//! glibc's malloc gives each thread an arena and keeps there what was freed: re-registering
//! 100,000 unchanged services grew the server from 137 to 224 MB. jemalloc with its default
//! arenas (4 per CPU) kept 37 MB of it; with one arena the server stays flat (134 MB before and
//! after). Threads still allocate from their own cache, so the arena's lock is taken only to
//! refill or flush it; the DNS path allocates nothing per query.
//!
//! jemalloc returns freed pages to the system gradually (over 10 s), but without a thread of its
//! own only while the program allocates: after 2,000 blocking queries were closed, an idle server
//! kept their 33 MB for good. A background thread does the returning, so a burst is given back.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
