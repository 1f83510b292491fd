//! Calls per second of `rawDataToProtocol` on a typical product script, through the engine.
//!
//! `cargo run --release -p lode-script --example script_bench [calls] [concurrency]`

use std::time::Instant;

use lode_script::{EngineConfig, Script, ScriptEngine};

const SCRIPT: &str = r#"function rawDataToProtocol(bytes) {
    var frame = new Uint8Array(bytes);
    var view = new DataView(frame.buffer);
    if (frame[0] !== 0x00) {
        throw new Error('unknown command ' + frame[0]);
    }
    return {
        method: 'thing.event.property.post',
        id: String(view.getUint32(1)),
        version: '1.0',
        params: { temperature: view.getInt16(5) / 10, humidity: bytes[7] & 0xff }
    };
}
function protocolToRawData(json) {
    return [0x02, 0, 0, 0, parseInt(json.id, 10) & 0xff, json.code === 200 ? 0 : 1];
}
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let calls: u32 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let concurrency: u32 = args.next().map_or(Ok(64), |a| a.parse())?;
    let engine = ScriptEngine::new(EngineConfig::default())?;
    let script = Script::new("a1bench", SCRIPT);
    let frame = [0x00, 0x00, 0x00, 0x00, 0x7b, 0x00, 0xfd, 0xc8];

    // One call alone, to compile the script on the worker it lands on.
    engine.raw_to_protocol(&script, &frame).await?;

    let started = Instant::now();
    for _ in 0..calls.min(10_000) {
        engine.raw_to_protocol(&script, &frame).await?;
    }
    let sequential = f64::from(calls.min(10_000)) / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let engine = engine.clone();
        let script = script.clone();
        let share = calls / concurrency + u32::from(task < calls % concurrency);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                engine.raw_to_protocol(&script, &frame).await?;
            }
            Ok::<_, lode_script::ScriptError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let concurrent = f64::from(calls) / elapsed.as_secs_f64();

    println!(
        "rawDataToProtocol, {} workers: {sequential:.0} calls/s one at a time, \
         {concurrent:.0} calls/s with {concurrency} concurrent callers ({calls} calls in {:.2} s)",
        engine.config().workers,
        elapsed.as_secs_f64(),
    );
    Ok(())
}
