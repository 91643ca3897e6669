//! `bpftune-delayline`: the delay-line forwarder. Normally started by
//! `bpftune_testbed::DelayLine`; see `bpftune_testbed::forwarder` for the
//! protocol (`ready A B` on stdout, exits on stdin EOF, parent exit or max
//! lifetime).

fn main() {
    let code = bpftune_testbed::forwarder::main_with_args(std::env::args().skip(1));
    std::process::exit(code);
}
