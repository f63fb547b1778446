//! Attach, bind and steer: the XDP program on the interface, one AF_XDP socket per RX queue
//! bound into its socket map, the per-class kernel actions, how many packets per flow the
//! kernel steers to userspace, and the verdict hooks that tell the kernel a flow is decided.
//! Everything that can be checked before the program attaches (queues, memory) is.

use std::{path::PathBuf, sync::Arc};

use crate::{
    capture::afxdp::{self, XskReceiver},
    config::{class_actions, Config},
    limits,
    pipeline::cascade::Cascade,
    system::{self, Interface},
    verdict::{HookFactory, VerdictHook},
    xdp::{VerdictMap, XdpProgram},
};

use super::{
    metrics::{Hooks, LiveMetrics},
    LiveError,
};

/// An attached program with its bound sockets.
pub struct Session {
    /// The XDP program, attached (detached on drop).
    pub program: XdpProgram,
    /// One socket per RX queue, from queue 0.
    pub sockets: Vec<XskReceiver>,
    /// Packets per flow the kernel steers to userspace (0: every packet).
    pub steer_packets: u32,
}

impl Session {
    /// Attaches to `[capture] interface` for `cascade`: checks the queues and memory asked
    /// for, attaches, sets the class actions, binds the sockets and sets steering.
    pub fn open(config: &Config, cascade: &Cascade) -> Result<Session, LiveError> {
        let c = &config.capture;
        let name = c.interface.as_deref().ok_or(LiveError::NoInterface)?;
        let classes: Vec<String> = cascade.classes.iter().map(|c| c.to_string()).collect();
        let actions = class_actions(&config.actions, &classes)?;
        // The interface's queues bound --queues: a socket on a queue it lacks cannot bind.
        let rx_queues = system::interface(name)?.rx_queues;
        if let Some(q) = c.queues.filter(|q| *q > rx_queues) {
            return Err(LiveError::Resources(format!(
                "--queues {q}: {name} has {rx_queues} RX queue{} (at most {rx_queues}; see `ethtool -l {name}`)",
                if rx_queues == 1 { "" } else { "s" },
            )));
        }
        let wanted = u64::from(c.queues.unwrap_or(rx_queues));
        limits::check_memory(
            &format!("the AF_XDP UMEM of {wanted} sockets"),
            wanted * afxdp::UMEM_BYTES,
        )
        .map_err(LiveError::Resources)?;
        let mut program = XdpProgram::attach(name, c.xdp_mode, c.map_entries)?;
        for a in &actions {
            program.set_class_action(a.class, a.action, a.mark)?;
        }
        let iface = program.interface().clone();
        let queues = c.queues.unwrap_or(iface.rx_queues);
        let mut sockets = Vec::with_capacity(queues as usize);
        for queue in 0..queues {
            let socket = XskReceiver::open(&iface, queue).map_err(|source| LiveError::Socket {
                iface: iface.name.clone(),
                queue,
                source,
            })?;
            program.bind_socket(queue, &socket.fd())?;
            sockets.push(socket);
        }
        // Userspace needs a flow's packets up to the deepest stage's count, and none once
        // decided.
        let steer_packets = if c.steer {
            cascade.packets(cascade.inline.len()) as u32
        } else {
            0
        };
        program.set_steer_packets(steer_packets)?;
        Ok(Session {
            program,
            sockets,
            steer_packets,
        })
    }

    /// The interface.
    pub fn iface(&self) -> &Interface {
        self.program.interface()
    }

    /// Where the maps are pinned.
    pub fn pin_dir(&self) -> PathBuf {
        self.program.pin_dir().to_owned()
    }

    /// One hook per deciding thread: the live metrics, and with steering the kernel's verdict
    /// map, so a decided flow's later packets stay in the kernel.
    pub fn hooks(&self, metrics: &Arc<LiveMetrics>) -> HookFactory {
        let metrics = Arc::clone(metrics);
        let pins = self.pin_dir();
        let steer = self.steer_packets != 0;
        Arc::new(move || {
            let mut hooks = vec![metrics.hook()];
            if steer {
                match VerdictMap::open(&pins) {
                    Ok(map) => hooks.push(Box::new(map) as Box<dyn VerdictHook>),
                    Err(e) => {
                        log::warn!("verdicts will not reach the kernel from this thread: {e}");
                    }
                }
            }
            Some(Box::new(Hooks(hooks)) as Box<dyn VerdictHook>)
        })
    }

    /// The line operators and the test bed wait for before sending traffic.
    pub fn ready_line(&self) -> String {
        let xsk_mode = self
            .sockets
            .first()
            .map(|s| s.bind_mode().to_string())
            .unwrap_or_default();
        format!(
            "ready on {} (XDP {} mode, {} AF_XDP socket(s), {xsk_mode}, steering {}); maps pinned at {}",
            self.iface().name,
            self.program.mode(),
            self.sockets.len(),
            if self.steer_packets == 0 {
                "every packet".to_owned()
            } else {
                format!("the first {} packets of undecided flows", self.steer_packets)
            },
            self.program.pin_dir().display()
        )
    }
}
