//! The connection task: the only owner of the socket.
//!
//! It reads and decodes packets, writes what the handles and handlers queue (one write
//! buffer, written while reading continues), sends PINGREQ when the keep alive is due,
//! allocates packet ids, answers QoS 1 deliveries with PUBACK and completes QoS 1
//! publishes on theirs. Downlink calls run in tasks of their own and send their answers
//! back through the command channel.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lode_mqtt::{
    Disconnect, Packet, PubResp, Publish, PublishProperties, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, Unsubscribe, decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

use crate::alink::{
    CODE_NOT_SUPPORTED, CODE_REQUEST_ERROR, Call, Inbound, PROPERTY_SET, Response, Via, parse_call,
    parse_reply, response_payload, service_of_method,
};
use crate::config::{DeviceConfig, Reconnect};
use crate::error::SdkError;
use crate::handler::{CallHandler, RawCall, RawHandler};
use crate::message::{Message, QoS};
use crate::shared::Shared;
use crate::transport::{self, BoxStream, MAX_PACKET, VERSION, packet_name};
use crate::{Event, Events};

/// Packet ids in use (QoS 1 publishes, subscribes, unsubscribes) before commands wait.
const MAX_IN_FLIGHT: usize = 4096;
/// Commands wait while this much is queued for the socket.
const WBUF_HIGH: usize = 256 * 1024;
/// Reply topics remembered to drop their echo (explicit subscriptions have no "no local").
const ECHO_MEMORY: usize = 256;
/// How long a clean disconnect may take to write its DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Work queued by the handles (and by handler tasks) for the connection task.
pub(crate) enum Command {
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        /// An answer the SDK sends: drop it if the server echoes it back.
        echo_guard: bool,
        /// Completed when written (QoS 0) or acknowledged (QoS 1).
        done: Option<oneshot::Sender<Result<(), SdkError>>>,
    },
    Subscribe {
        filters: Vec<String>,
        qos: QoS,
        done: oneshot::Sender<Result<(), SdkError>>,
    },
    Unsubscribe {
        filters: Vec<String>,
        done: oneshot::Sender<Result<(), SdkError>>,
    },
    Disconnect {
        done: oneshot::Sender<()>,
    },
}

type Done = oneshot::Sender<Result<(), SdkError>>;

/// Sends a handler's answer through the command channel, unless every handle is gone.
async fn send_answer(weak: mpsc::WeakSender<Command>, topic: String, payload: Bytes, qos: QoS) {
    if let Some(tx) = weak.upgrade() {
        // A send error means the connection task has ended; the answer has nowhere to go.
        let _ = tx
            .send(Command::Publish {
                topic,
                payload,
                qos,
                echo_guard: true,
                done: None,
            })
            .await;
    }
}

/// Runs a call handler in its own task; a panic becomes a 400 answer.
fn spawn_call(
    handler: Arc<dyn CallHandler>,
    call: Call,
    weak: mpsc::WeakSender<Command>,
    topic: String,
    qos: QoS,
) {
    tokio::spawn(async move {
        let id = call.id.clone();
        let response = tokio::spawn(handler.call(call))
            .await
            .unwrap_or_else(|_| Response::error(CODE_REQUEST_ERROR, "handler failed"));
        let payload = Bytes::from(response_payload(&id, &response));
        send_answer(weak, topic, payload, qos).await;
    });
}

/// Runs a raw handler in its own task; a panic sends no answer.
fn spawn_raw(
    handler: Arc<dyn RawHandler>,
    call: RawCall,
    weak: mpsc::WeakSender<Command>,
    topic: String,
) {
    tokio::spawn(async move {
        if let Ok(payload) = tokio::spawn(handler.call(call)).await {
            send_answer(weak, topic, payload, QoS::AtMostOnce).await;
        }
    });
}

/// One write step: part of the buffer, or a flush once it is empty. Returns whether it
/// flushed. Cancel-safe: a write that did not complete wrote nothing.
async fn drain(wr: &mut WriteHalf<BoxStream>, wbuf: &mut BytesMut) -> std::io::Result<bool> {
    if wbuf.is_empty() {
        wr.flush().await?;
        Ok(true)
    } else {
        wr.write_buf(wbuf).await?;
        Ok(false)
    }
}

pub(crate) struct Connection {
    rd: ReadHalf<BoxStream>,
    wr: WriteHalf<BoxStream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    unflushed: bool,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    weak: mpsc::WeakSender<Command>,
    events: mpsc::UnboundedSender<Event>,
    in_flight: HashMap<u16, Option<Done>>,
    subacks: HashMap<u16, (Vec<String>, QoS, Option<Done>)>,
    unsubacks: HashMap<u16, Done>,
    /// Filters the server granted, subscribed again after a reconnection.
    subscribed: Vec<(String, QoS)>,
    /// The sign-in and policy to reconnect with, when reconnection is on.
    redial: Option<(DeviceConfig, Reconnect)>,
    last_packet_id: u16,
    keep_alive: Option<Duration>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    echoes: VecDeque<String>,
}

/// Starts the connection task; returns the command sender and the event stream.
pub(crate) fn spawn(
    stream: BoxStream,
    rbuf: BytesMut,
    shared: Arc<Shared>,
    config: &DeviceConfig,
) -> (mpsc::Sender<Command>, Events) {
    let (tx, commands) = mpsc::channel(1024);
    let (events, events_rx) = mpsc::unbounded_channel();
    let (rd, wr) = tokio::io::split(stream);
    let keep_alive = config.keep_alive_duration();
    let conn = Connection {
        rd,
        wr,
        rbuf,
        wbuf: BytesMut::with_capacity(8192),
        unflushed: false,
        shared,
        commands,
        weak: tx.downgrade(),
        events,
        in_flight: HashMap::new(),
        subacks: HashMap::new(),
        unsubacks: HashMap::new(),
        subscribed: Vec::new(),
        redial: config.reconnect.map(|policy| (config.clone(), policy)),
        last_packet_id: 0,
        keep_alive: (!keep_alive.is_zero()).then_some(keep_alive),
        last_sent: Instant::now(),
        ping_sent: None,
        echoes: VecDeque::new(),
    };
    tokio::spawn(conn.run());
    (tx, Events { rx: events_rx })
}

/// Fails a command that cannot be carried out while the connection is down.
fn refuse(command: Command) {
    match command {
        Command::Publish { done, .. } => {
            if let Some(done) = done {
                let _ = done.send(Err(SdkError::Closed));
            }
        }
        Command::Subscribe { done, .. } | Command::Unsubscribe { done, .. } => {
            let _ = done.send(Err(SdkError::Closed));
        }
        Command::Disconnect { done } => {
            let _ = done.send(());
        }
    }
}

impl Connection {
    async fn run(mut self) {
        loop {
            let end = self.serve().await;
            self.fail_in_flight();
            let error = match end {
                Ok(()) => break,
                Err(e) => e,
            };
            let Some((config, policy)) = self.redial.clone() else {
                self.shared.close();
                // The receiver may be gone: nobody listens for events then.
                let _ = self.events.send(Event::ConnectionLost(error));
                return;
            };
            self.shared.fail_pending();
            let _ = self.events.send(Event::ConnectionLost(error));
            if !self.reconnect(&config, policy).await {
                break;
            }
            let _ = self.events.send(Event::Reconnected);
        }
        self.shared.close();
        let _ = self.events.send(Event::Disconnected);
    }

    /// Everything waiting for an acknowledgement of the lost connection fails.
    fn fail_in_flight(&mut self) {
        for (_, done) in self.in_flight.drain() {
            if let Some(done) = done {
                let _ = done.send(Err(SdkError::Closed));
            }
        }
        for (_, (_, _, done)) in self.subacks.drain() {
            if let Some(done) = done {
                let _ = done.send(Err(SdkError::Closed));
            }
        }
        for (_, done) in self.unsubacks.drain() {
            let _ = done.send(Err(SdkError::Closed));
        }
    }

    /// Signs in again with growing, jittered waits; commands arriving meanwhile fail.
    /// Returns false when the device is disconnected (or dropped) instead.
    async fn reconnect(&mut self, config: &DeviceConfig, policy: Reconnect) -> bool {
        let mut delay = policy.min_delay;
        loop {
            let wait = Reconnect::jittered(delay, rand::random_range(0.5..=1.0));
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    () = sleep_until(deadline) => break,
                    command = self.commands.recv() => match command {
                        None => return false,
                        Some(Command::Disconnect { done }) => {
                            let _ = done.send(());
                            return false;
                        }
                        Some(command) => refuse(command),
                    },
                }
            }
            match transport::dial(config).await {
                Ok((stream, rbuf)) => {
                    self.resume(stream, rbuf);
                    return true;
                }
                Err(_) => delay = policy.next(delay),
            }
        }
    }

    /// Takes over a new stream: fresh buffers and keep alive, subscriptions restored.
    fn resume(&mut self, stream: BoxStream, rbuf: BytesMut) {
        let (rd, wr) = tokio::io::split(stream);
        self.rd = rd;
        self.wr = wr;
        self.rbuf = rbuf;
        self.wbuf.clear();
        self.unflushed = false;
        self.ping_sent = None;
        self.last_sent = Instant::now();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let filters: Vec<String> = self
                .subscribed
                .iter()
                .filter(|(_, q)| *q == qos)
                .map(|(f, _)| f.clone())
                .collect();
            if !filters.is_empty() {
                self.subscribe(filters, qos, None);
            }
        }
    }

    fn in_use(&self) -> usize {
        self.in_flight.len() + self.subacks.len() + self.unsubacks.len()
    }

    async fn serve(&mut self) -> Result<(), SdkError> {
        self.process_input()?;
        loop {
            let ping_due = match (self.ping_sent, self.keep_alive) {
                (Some(sent), Some(ka)) => sent + ka,
                (None, Some(ka)) => self.last_sent + ka,
                (_, None) => self.last_sent,
            };
            let accepting = self.in_use() < MAX_IN_FLIGHT && self.wbuf.len() < WBUF_HIGH;
            tokio::select! {
                read = self.rd.read_buf(&mut self.rbuf) => {
                    if read? == 0 {
                        return Err(SdkError::Closed);
                    }
                    self.process_input()?;
                    self.rbuf.reserve(4096);
                }
                flushed = drain(&mut self.wr, &mut self.wbuf), if !self.wbuf.is_empty() || self.unflushed => {
                    self.unflushed = !flushed?;
                }
                command = self.commands.recv(), if accepting => match command {
                    None => {
                        self.close().await;
                        return Ok(());
                    }
                    Some(command) => {
                        if let Some(done) = self.command(command) {
                            self.close().await;
                            let _ = done.send(());
                            return Ok(());
                        }
                    }
                },
                () = sleep_until(ping_due), if self.keep_alive.is_some() => {
                    if self.ping_sent.is_some() {
                        return Err(SdkError::Timeout("PINGRESP"));
                    }
                    self.queue(&Packet::PingReq);
                    self.ping_sent = Some(Instant::now());
                }
            }
        }
    }

    /// Writes DISCONNECT after everything queued, then closes the stream. A failure means
    /// the connection is gone already, which is the goal: it is not reported.
    async fn close(&mut self) {
        self.queue(&Packet::Disconnect(Disconnect::default()));
        let wr = &mut self.wr;
        let wbuf = &mut self.wbuf;
        let _ = timeout(CLOSE_TIMEOUT, async move {
            wr.write_all_buf(wbuf).await?;
            wr.flush().await?;
            wr.shutdown().await
        })
        .await;
    }

    fn queue(&mut self, packet: &Packet) {
        encode(packet, VERSION, &mut self.wbuf);
        self.last_sent = Instant::now();
    }

    fn next_packet_id(&mut self) -> Option<u16> {
        if self.in_use() >= usize::from(u16::MAX) - 1 {
            return None;
        }
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            let id = self.last_packet_id;
            if id != 0
                && !self.in_flight.contains_key(&id)
                && !self.subacks.contains_key(&id)
                && !self.unsubacks.contains_key(&id)
            {
                return Some(id);
            }
        }
    }

    /// Carries out a command; a disconnect request is handed back to the caller.
    fn command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Publish {
                topic,
                payload,
                qos,
                echo_guard,
                done,
            } => {
                if echo_guard {
                    self.remember_echo(&topic);
                }
                self.publish(topic, payload, qos, done);
            }
            Command::Subscribe { filters, qos, done } => self.subscribe(filters, qos, Some(done)),
            Command::Unsubscribe { filters, done } => {
                self.subscribed.retain(|(f, _)| !filters.contains(f));
                match self.next_packet_id() {
                    Some(packet_id) => {
                        self.queue(&Packet::Unsubscribe(Unsubscribe {
                            packet_id,
                            filters,
                            user_properties: Vec::new(),
                        }));
                        self.unsubacks.insert(packet_id, done);
                    }
                    None => {
                        let _ = done.send(Err(SdkError::Protocol("no packet id free".into())));
                    }
                }
            }
            Command::Disconnect { done } => return Some(done),
        }
        None
    }

    /// Remembers a topic the SDK answers on, to drop the server's echo of it.
    fn remember_echo(&mut self, topic: &str) {
        if self.echoes.len() >= ECHO_MEMORY {
            self.echoes.pop_front();
        }
        self.echoes.push_back(topic.to_owned());
    }

    /// Queues a SUBSCRIBE; `done` learns the outcome (none for a restoring subscription).
    fn subscribe(&mut self, filters: Vec<String>, qos: QoS, done: Option<Done>) {
        let Some(packet_id) = self.next_packet_id() else {
            if let Some(done) = done {
                let _ = done.send(Err(SdkError::Protocol("no packet id free".into())));
            }
            return;
        };
        let options = SubscriptionOptions {
            qos: qos.to_mqtt(),
            ..SubscriptionOptions::default()
        };
        self.queue(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: filters.iter().map(|f| (f.clone(), options)).collect(),
            subscription_identifier: None,
            user_properties: Vec::new(),
        }));
        self.subacks.insert(packet_id, (filters, qos, done));
    }

    /// Queues a PUBLISH; QoS 1 falls back to QoS 0 only if every packet id is taken.
    fn publish(&mut self, topic: String, payload: Bytes, qos: QoS, done: Option<Done>) {
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => self.next_packet_id(),
        };
        let mqtt_qos = if packet_id.is_some() {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.queue(&Packet::Publish(Publish {
            dup: false,
            qos: mqtt_qos.to_mqtt(),
            retain: false,
            topic: Bytes::from(topic),
            packet_id,
            payload,
            properties: PublishProperties::default(),
        }));
        match packet_id {
            Some(id) => {
                self.in_flight.insert(id, done);
            }
            None => {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
            }
        }
    }

    fn process_input(&mut self) -> Result<(), SdkError> {
        while let Some(decoded) = decode(&mut self.rbuf, VERSION, MAX_PACKET)
            .map_err(|e| SdkError::Protocol(e.to_string()))?
        {
            self.packet(decoded.packet)?;
        }
        Ok(())
    }

    fn packet(&mut self, packet: Packet) -> Result<(), SdkError> {
        match packet {
            Packet::Publish(p) => {
                if let Some(id) = p.packet_id {
                    self.queue(&Packet::PubAck(PubResp::new(id, ReasonCode::Success)));
                }
                let topic = String::from_utf8(p.topic.to_vec())
                    .map_err(|_| SdkError::Protocol("topic is not UTF-8".into()))?;
                self.dispatch(Message {
                    topic,
                    payload: p.payload,
                    qos: QoS::from_mqtt(p.qos),
                    retain: p.retain,
                });
            }
            Packet::PubAck(ack) => {
                if let Some(Some(done)) = self.in_flight.remove(&ack.packet_id) {
                    let _ = done.send(Ok(()));
                }
            }
            Packet::SubAck(ack) => self.suback(ack)?,
            Packet::UnsubAck(ack) => {
                if let Some(done) = self.unsubacks.remove(&ack.packet_id) {
                    let _ = done.send(Ok(()));
                }
            }
            Packet::PingResp => self.ping_sent = None,
            other => {
                return Err(SdkError::Protocol(format!(
                    "unexpected {} from the server",
                    packet_name(&other)
                )));
            }
        }
        Ok(())
    }

    fn suback(&mut self, ack: SubAck) -> Result<(), SdkError> {
        let Some((filters, qos, done)) = self.subacks.remove(&ack.packet_id) else {
            return Ok(());
        };
        if ack.codes.len() != filters.len() {
            return Err(SdkError::Protocol(format!(
                "SUBACK with {} codes for {} filters",
                ack.codes.len(),
                filters.len()
            )));
        }
        let mut refused = None;
        for (filter, code) in filters.into_iter().zip(&ack.codes) {
            if code.is_error() {
                refused.get_or_insert(filter);
            } else if !self.subscribed.iter().any(|(f, _)| *f == filter) {
                self.subscribed.push((filter, qos));
            }
        }
        if let Some(done) = done {
            let _ = done.send(match refused {
                Some(filter) => Err(SdkError::SubscribeRefused { filter }),
                None => Ok(()),
            });
        }
        Ok(())
    }

    /// Sends a message nobody handles to the matching subscriptions, else to the events.
    fn deliver(&self, msg: Message) {
        if !self.shared.route(&msg) {
            let _ = self.events.send(Event::Message(msg));
        }
    }

    /// Queues the SDK's own answer (no handler), remembering its topic as an echo to drop.
    fn answer_now(&mut self, topic: String, payload: Vec<u8>, qos: QoS) {
        self.remember_echo(&topic);
        self.publish(topic, Bytes::from(payload), qos, None);
    }

    fn dispatch(&mut self, msg: Message) {
        if let Some(i) = self.echoes.iter().position(|t| *t == msg.topic) {
            self.echoes.remove(i);
            return;
        }
        let shared = Arc::clone(&self.shared);
        let topics = &shared.topics;
        match topics.classify(&msg.topic) {
            Inbound::Reply => {
                if let Some(reply) = parse_reply(&msg.payload)
                    && self.shared.complete(&msg.topic, reply)
                {
                    return;
                }
                self.deliver(msg);
            }
            Inbound::RawReply => {
                if !self.shared.complete_raw(&msg.payload) {
                    self.deliver(msg);
                }
            }
            Inbound::Call { identifier, via } => {
                let Some(parsed) = parse_call(&msg.payload) else {
                    self.deliver(msg);
                    return;
                };
                let (topic, qos) = match &via {
                    Via::Async if identifier == PROPERTY_SET => {
                        (format!("{}_reply", msg.topic), QoS::AtLeastOnce)
                    }
                    Via::Async => (format!("{}_reply", msg.topic), QoS::AtMostOnce),
                    _ => (msg.topic.clone(), QoS::AtMostOnce),
                };
                let call = Call {
                    id: parsed.id,
                    identifier: identifier.to_owned(),
                    method: parsed.method,
                    params: parsed.params,
                    via,
                };
                self.call(call, topic, qos);
            }
            Inbound::LegacyRrpc { message_id } => {
                let Some(parsed) = parse_call(&msg.payload) else {
                    self.deliver(msg);
                    return;
                };
                let Some(identifier) = parsed.method.as_deref().and_then(service_of_method) else {
                    self.deliver(msg);
                    return;
                };
                let call = Call {
                    id: parsed.id,
                    identifier,
                    method: parsed.method,
                    params: parsed.params,
                    via: Via::LegacyRrpc {
                        message_id: message_id.to_owned(),
                    },
                };
                let topic = topics.sys(&format!("rrpc/response/{message_id}"));
                self.call(call, topic, QoS::AtMostOnce);
            }
            Inbound::Raw { via } => {
                let handler = self.shared.handlers().raw.clone();
                let Some(handler) = handler else {
                    self.deliver(msg);
                    return;
                };
                let topic = match via {
                    Via::Async => topics.sys("thing/model/down_raw_reply"),
                    _ => msg.topic.clone(),
                };
                let call = RawCall {
                    topic: msg.topic,
                    payload: msg.payload,
                    via,
                };
                spawn_raw(handler, call, self.weak.clone(), topic);
            }
            Inbound::CustomRrpc { rrpc_id, suffix } => {
                let handler = self.shared.handlers().rrpc.get(suffix).cloned();
                let Some(handler) = handler else {
                    self.deliver(msg);
                    return;
                };
                let call = RawCall {
                    via: Via::Rrpc {
                        rrpc_id: rrpc_id.to_owned(),
                    },
                    topic: msg.topic.clone(),
                    payload: msg.payload,
                };
                spawn_raw(handler, call, self.weak.clone(), msg.topic);
            }
            Inbound::Other => self.deliver(msg),
        }
    }

    /// Runs the call's handler, or answers 460 at once when there is none.
    fn call(&mut self, call: Call, topic: String, qos: QoS) {
        let handler = self.shared.handlers().calls.get(&call.identifier).cloned();
        match handler {
            Some(handler) => spawn_call(handler, call, self.weak.clone(), topic, qos),
            None => {
                let what = if call.identifier == PROPERTY_SET {
                    "property set not supported".to_owned()
                } else {
                    format!("service {} not supported", call.identifier)
                };
                let payload =
                    response_payload(&call.id, &Response::error(CODE_NOT_SUPPORTED, what));
                self.answer_now(topic, payload, qos);
            }
        }
    }
}
