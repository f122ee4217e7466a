//! `host-example bench`: a load generator for self-rotation.
//!
//! It seeds N users, each with a personal access token (bypass 2FA, so the
//! measurement is the regeneration itself), then C workers (one keep-alive
//! connection each) drive the server for D seconds: every request
//! regenerates the token it authenticates with and the reply's token is
//! used for the next. Workers own disjoint users, so every request should
//! succeed. At the end every user is checked over HTTP: the last token
//! returned authenticates and the one before it does not; a mismatch is
//! lost data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::admin::{self, UserSpec};
use crate::services::Services;

pub struct LoadConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:3000`.
    pub url: String,
    /// More hosts on the same database: worker `i` uses host `i % hosts`,
    /// and the final check asks every host.
    pub more_urls: Vec<String>,
    pub users: usize,
    pub connections: usize,
    pub duration: Duration,
    pub show_progress: bool,
    /// Extra connections sending wrong passwords meanwhile (0: none).
    pub login_flood: usize,
}

/// One user's rotation chain.
struct Rotor {
    user_id: String,
    current: String,
    previous: Option<String>,
    /// A request after the last success failed without a reply (5xx or
    /// transport): it may have committed, so `current` may be replaced by a
    /// token this client never received (in doubt, not acknowledged data).
    in_doubt: bool,
}

#[derive(Default)]
pub struct Report {
    /// Flood logins answered 401 (checked) and 429 (shed).
    pub flood_checked: u64,
    pub flood_shed: u64,
    pub requests: u64,
    pub ok: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub latency: Option<Histogram<u64>>,
    /// Per second of the run: (second, requests, p50 µs, p99 µs, max µs).
    pub timeline: Vec<(u64, u64, u64, u64, u64)>,
    pub users_checked: usize,
    /// Acknowledged data lost: the last token returned does not work (with
    /// no unanswered request after it), or a replaced one still does.
    pub lost: Vec<String>,
    /// Users whose last token stopped working after a request that got no
    /// reply (the commit happened, the reply did not arrive).
    pub in_doubt: Vec<String>,
    /// Checks that got neither 200 nor 401 (no reply, 5xx, 429): neither
    /// loss nor its absence is shown, so a run with any is not a pass.
    pub unverified: Vec<String>,
    /// CPU time this process used (server and load generator together).
    pub cpu: Option<Duration>,
    /// Of which the load generator's own threads (workers and flood).
    pub generator_cpu: Option<Duration>,
    /// CPU time the whole machine used (every process: hosts, database,
    /// load generator), for runs whose servers are other processes.
    pub machine_cpu: Option<Duration>,
}

/// Busy CPU time of the whole machine so far, all cores (Linux `/proc/stat`).
pub fn machine_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Some(Duration::from_millis(busy * 10)) // USER_HZ is 100 on Linux
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`).
pub fn process_cpu() -> Option<Duration> {
    cpu_of("/proc/self/stat")
}

/// User + system CPU time of the calling thread so far.
fn thread_cpu() -> Option<Duration> {
    cpu_of("/proc/thread-self/stat")
}

fn cpu_of(stat_file: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_file).ok()?;
    // Fields after the command name (which may contain spaces) start at ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

const TOKEN_NAME: &str = "load";

/// Creates `n` users with one bypass PAT each, through `services`' storage.
pub fn seed(services: &Services, n: usize) -> crate::error::Result<Vec<(String, String)>> {
    let tag = admin::random_id(5);
    (0..n)
        .map(|i| {
            let name = format!("load-{tag}-{i}");
            let spec = UserSpec {
                username: &name,
                email: None,
                password: None,
                roles: &["user"],
            };
            let id = admin::create_user(services, &spec, 4)?;
            let pat = admin::issue_personal_access_token(services, &id, TOKEN_NAME, true)?;
            Ok((id, pat))
        })
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn regenerate(
    agent: &ureq::Agent,
    url: &str,
    user_id: &str,
    token: &str,
) -> Result<(u16, String), String> {
    let mut resp = agent
        .post(url)
        .header("X-User-Id", user_id)
        .header("X-Auth-Token", token)
        .header("Content-Type", "application/json")
        .send(r#"{"tokenName":"load"}"#)
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// The `"token"` of a success reply (the body is `{"token":"…","success":true}`).
fn token_of(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["token"].as_str().map(String::from)
}

pub fn run(config: &LoadConfig, seeded: Vec<(String, String)>) -> Report {
    let hosts: Vec<String> = std::iter::once(&config.url)
        .chain(&config.more_urls)
        .map(|u| format!("{u}/api/v1/users.regeneratePersonalAccessToken"))
        .collect();
    let mut rotors: Vec<Vec<Rotor>> = (0..config.connections).map(|_| Vec::new()).collect();
    for (i, (user_id, current)) in seeded.into_iter().enumerate() {
        rotors[i % config.connections].push(Rotor {
            user_id,
            current,
            previous: None,
            in_doubt: false,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu();
    let machine_before = machine_cpu();
    let start = Instant::now();
    let workers: Vec<_> = rotors
        .into_iter()
        .enumerate()
        .map(|(w, mut mine)| {
            let (stop, done) = (stop.clone(), done.clone());
            let url = hosts[w % hosts.len()].clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut samples: Vec<(u64, u64)> = Vec::with_capacity(1 << 16); // (µs since start, latency µs)
                let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
                let mut ok = 0u64;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && !mine.is_empty() {
                    let n = mine.len();
                    let r = &mut mine[i % n];
                    i += 1;
                    let t = Instant::now();
                    let outcome = regenerate(&agent, &url, &r.user_id, &r.current);
                    let latency = t.elapsed().as_micros() as u64;
                    samples.push(((t - start).as_micros() as u64, latency));
                    match outcome {
                        Ok((200, body)) => match token_of(&body) {
                            Some(next) => {
                                r.previous = Some(std::mem::replace(&mut r.current, next));
                                r.in_doubt = false;
                                ok += 1;
                            }
                            None => *errors.entry("200 without a token".into()).or_default() += 1,
                        },
                        Ok((status, _)) => {
                            r.in_doubt |= status >= 500;
                            *errors.entry(format!("HTTP {status}")).or_default() += 1
                        }
                        Err(e) => {
                            r.in_doubt = true;
                            *errors.entry(format!("transport: {e}")).or_default() += 1
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (mine, samples, errors, ok, thread_cpu())
            })
        })
        .collect();

    // Wrong passwords for unknown users, each connection its own name.
    let flood: Vec<_> = (0..config.login_flood)
        .map(|i| {
            let (stop, login) = (stop.clone(), format!("{}/api/v1/login", config.url));
            std::thread::spawn(move || {
                let agent = agent();
                let (mut checked, mut shed) = (0u64, 0u64);
                let body = format!(r#"{{"user":"flood{i}","password":"guess"}}"#);
                while !stop.load(Ordering::Relaxed) {
                    let status = agent
                        .post(&login)
                        .header("Content-Type", "application/json")
                        .send(&body)
                        .map(|r| r.status().as_u16());
                    match status {
                        Ok(429) => shed += 1,
                        Ok(_) => checked += 1,
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                (checked, shed, thread_cpu())
            })
        })
        .collect();
    let bar = config.show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(config.duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len}s  {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar
    });
    while start.elapsed() < config.duration {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(bar) = &bar {
            let n = done.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            bar.set_position(secs as u64);
            bar.set_message(format!("{n} requests, {:.0}/s", n as f64 / secs));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut report = Report::default();
    let mut all_rotors = Vec::new();
    let mut samples = Vec::new();
    let mut generator_cpu = Some(Duration::ZERO);
    let mut add_cpu = |c: Option<Duration>| {
        generator_cpu = generator_cpu.zip(c).map(|(a, b)| a + b);
    };
    for w in workers {
        let (mine, s, errors, ok, cpu) = w.join().expect("worker");
        add_cpu(cpu);
        all_rotors.extend(mine);
        samples.extend(s);
        for (k, v) in errors {
            *report.errors.entry(k).or_default() += v;
        }
        report.ok += ok;
    }
    report.elapsed = start.elapsed();
    for f in flood {
        let (checked, shed, cpu) = f.join().expect("flood worker");
        add_cpu(cpu);
        report.flood_checked += checked;
        report.flood_shed += shed;
    }
    report.cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    report.generator_cpu = generator_cpu;
    report.machine_cpu = machine_cpu()
        .zip(machine_before)
        .map(|(after, before)| after.saturating_sub(before));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report.requests = samples.len() as u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for (_, l) in &samples {
        let _ = hist.record((*l).max(1));
    }
    report.latency = Some(hist);
    report.timeline = timeline(&samples);
    verify(config, &all_rotors, &mut report);
    report
}

fn timeline(samples: &[(u64, u64)]) -> Vec<(u64, u64, u64, u64, u64)> {
    let seconds = samples
        .iter()
        .map(|(t, _)| t / 1_000_000)
        .max()
        .map_or(0, |m| m + 1);
    (0..seconds)
        .map(|s| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for (_, l) in samples.iter().filter(|(t, _)| t / 1_000_000 == s) {
                let _ = h.record((*l).max(1));
            }
            (
                s,
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max(),
            )
        })
        .collect()
}

/// Every user, on every host: the last token works and the one before it
/// does not.
fn verify(config: &LoadConfig, rotors: &[Rotor], report: &mut Report) {
    let agent = agent();
    for base in std::iter::once(&config.url).chain(&config.more_urls) {
        let me = format!("{base}/api/v1/me");
        // 200 or 401 is the server's answer about the token; anything else
        // (no reply, 5xx, 429) answers nothing about it.
        let status = |user: &str, token: &str| {
            agent
                .get(&me)
                .header("X-User-Id", user)
                .header("X-Auth-Token", token)
                .call()
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        };
        let unanswered = |got: Result<u16, String>| match got {
            Ok(status) => format!("status {status}"),
            Err(e) => format!("no reply ({e})"),
        };
        for r in rotors {
            report.users_checked += 1;
            match status(&r.user_id, &r.current) {
                Ok(200) => {}
                Ok(401) => {
                    let what = format!(
                        "user {} on {base}: the last token returned does not authenticate",
                        r.user_id
                    );
                    if r.in_doubt {
                        report.in_doubt.push(what);
                    } else {
                        report.lost.push(what);
                    }
                }
                other => report.unverified.push(format!(
                    "user {} on {base}: the last token could not be checked: {}",
                    r.user_id,
                    unanswered(other)
                )),
            }
            if let Some(prev) = &r.previous {
                match status(&r.user_id, prev) {
                    Ok(401) => {}
                    Ok(200) => report.lost.push(format!(
                        "user {} on {base}: a replaced token still authenticates",
                        r.user_id
                    )),
                    other => report.unverified.push(format!(
                        "user {} on {base}: the replaced token could not be checked: {}",
                        r.user_id,
                        unanswered(other)
                    )),
                }
            }
        }
    }
}

impl Report {
    pub fn print(&self, label: &str) {
        let h = self.latency.as_ref();
        let q = |p: f64| h.map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0);
        println!("{label}");
        println!(
            "  requests        {} in {:.1} s",
            self.requests,
            self.elapsed.as_secs_f64()
        );
        println!(
            "  throughput      {:.0} regenerations/s",
            self.ok as f64 / self.elapsed.as_secs_f64()
        );
        println!(
            "  latency (ms)    p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            q(0.5),
            q(0.9),
            q(0.99),
            h.map_or(0.0, |h| h.max() as f64 / 1000.0)
        );
        if let Some(us) = self.cpu_per_request_us() {
            println!("  CPU             {us:.1} µs per request in this process (both cores)");
        }
        if let (Some(gen_us), Some(server_us)) = (
            self.generator_cpu_per_request_us(),
            self.server_cpu_per_request_us(),
        ) {
            println!(
                "    of which      {gen_us:.1} µs in the load generator's threads, {server_us:.1} µs in the rest"
            );
        }
        if let Some(m) = self.machine_cpu.filter(|_| self.requests > 0) {
            println!(
                "  machine CPU     {:.1} µs per request (every process: hosts, database, load generator)",
                m.as_secs_f64() * 1e6 / self.requests as f64
            );
        }
        if self.flood_checked + self.flood_shed > 0 {
            println!(
                "  login flood     {} wrong passwords checked, {} shed with 429",
                self.flood_checked, self.flood_shed
            );
        }
        let errors: u64 = self.errors.values().sum();
        println!(
            "  errors          {errors}{}",
            if errors > 0 {
                format!(" {:?}", self.errors)
            } else {
                String::new()
            }
        );
        println!(
            "  users checked   {}; lost data: {}",
            self.users_checked,
            self.lost.len()
        );
        for l in self.lost.iter().take(10) {
            println!("    {l}");
        }
        if !self.in_doubt.is_empty() {
            println!(
                "  in doubt        {} (a request got no reply and its commit may have happened)",
                self.in_doubt.len()
            );
        }
        if !self.unverified.is_empty() {
            println!(
                "  unverified      {} (the check got no 200 or 401: the server is unreachable or failing)",
                self.unverified.len()
            );
            for u in self.unverified.iter().take(3) {
                println!("    {u}");
            }
        }
    }

    /// Whether the run passed its loss check: nothing acknowledged lost, and
    /// every check made (a check that got no answer shows nothing).
    pub fn verdict(&self) -> Result<(), String> {
        if !self.lost.is_empty() {
            return Err(format!("{} users lost data", self.lost.len()));
        }
        if !self.unverified.is_empty() {
            return Err(format!(
                "{} checks could not be made: the loss check is incomplete",
                self.unverified.len()
            ));
        }
        Ok(())
    }

    /// Process CPU time per request, in microseconds.
    pub fn cpu_per_request_us(&self) -> Option<f64> {
        self.cpu
            .filter(|_| self.requests > 0)
            .map(|c| c.as_secs_f64() * 1e6 / self.requests as f64)
    }

    /// This process's CPU per request without the load generator's threads
    /// (the in-process server's own cost), in microseconds.
    pub fn server_cpu_per_request_us(&self) -> Option<f64> {
        Some((self.cpu_per_request_us()? - self.generator_cpu_per_request_us()?).max(0.0))
    }

    /// The load generator's own CPU time per request, in microseconds.
    pub fn generator_cpu_per_request_us(&self) -> Option<f64> {
        self.generator_cpu
            .filter(|_| self.requests > 0)
            .map(|c| c.as_secs_f64() * 1e6 / self.requests as f64)
    }

    /// Latency over time (p50, p99, max per second) as an SVG chart.
    pub fn svg(&self, title: &str) -> String {
        let (w, h, pad) = (900.0, 360.0, 50.0);
        let secs = self.timeline.len().max(1) as f64;
        let top = self.timeline.iter().map(|t| t.3).max().unwrap_or(1).max(1) as f64 * 1.2 / 1000.0;
        let x = |s: f64| pad + (w - 2.0 * pad) * s / secs;
        let y = |ms: f64| h - pad - (h - 2.0 * pad) * (ms / top).min(1.0);
        let line = |pick: fn(&(u64, u64, u64, u64, u64)) -> u64, color: &str| {
            let pts: Vec<String> = self
                .timeline
                .iter()
                .map(|t| {
                    format!(
                        "{:.1},{:.1}",
                        x(t.0 as f64 + 0.5),
                        y(pick(t) as f64 / 1000.0)
                    )
                })
                .collect();
            format!(
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                pts.join(" ")
            )
        };
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="25" font-size="14">{title}</text>
<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="black"/>
"#,
            h - pad,
            w - pad,
            h - pad,
            h - pad
        );
        for i in 0..=4 {
            let ms = top * i as f64 / 4.0;
            svg += &format!(
                r##"<text x="5" y="{:.1}">{ms:.2} ms</text><line x1="{pad}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/>"##,
                y(ms) + 4.0,
                y(ms),
                w - pad,
                y(ms)
            );
            svg += "\n";
        }
        svg += &format!(
            r#"<text x="{}" y="{}">time (s, {} s in all)</text>"#,
            w / 2.0 - 40.0,
            h - 15.0,
            secs
        );
        svg += &line(|t| t.2, "#1f77b4");
        svg += &line(|t| t.3, "#d62728");
        svg += &line(|t| t.4, "#aaaaaa");
        svg += &format!(
            r##"<text x="{}" y="45" fill="#1f77b4">p50</text><text x="{}" y="45" fill="#d62728">p99</text><text x="{}" y="45" fill="#888">max</text></svg>"##,
            w - 200.0,
            w - 150.0,
            w - 100.0
        );
        svg
    }
}
