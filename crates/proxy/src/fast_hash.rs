//! The hasher of maps looked up on every request (kept connections to other sidecars,
//! services by name): foldhash, seeded per process, which spends an order of magnitude fewer
//! instructions than std's SipHash on short keys (`bench/mesh_instructions.sh` measured the
//! kept-connection lookup alone at ~660 instructions a request with SipHash). Their keys are
//! addresses and names the registry gave, not a client's choosing, so flooding the table is
//! not open to a caller.

pub(crate) type FastHash = foldhash::fast::RandomState;
