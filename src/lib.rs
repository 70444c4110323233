pub mod pb {
    pub mod io {
        pub mod prometheus {
            pub mod client {
                include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
            }
        }
    }
    pub mod pushgate {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/pushgate.v1.rs"));
        }
    }
}

pub mod admin;
pub mod allocator;
pub mod blocking;
pub mod build_info;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod http;
pub mod model;
pub mod server;
pub mod transport;
