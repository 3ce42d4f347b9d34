//! Entropy inside the simulation comes from the seed, including the getrandom 0.2 that rand 0.8
//! (and so the raft crate and others) reach through `thread_rng`.

fn draw(seed: u64) -> [u8; 32] {
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(async {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).expect("getrandom answers");
        bytes
    })
}

#[test]
fn getrandom_draws_follow_the_seed() {
    assert_eq!(draw(7), draw(7), "the same seed gives the same bytes");
    assert_ne!(draw(7), draw(8), "another seed gives other bytes");
}
