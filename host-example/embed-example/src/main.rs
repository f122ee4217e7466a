//! The rcpat component in an axum server, embedded with `rcpat-wasmtime`:
//! Rocket.Chat's token routes on `127.0.0.1:PORT` (argument, default 3000),
//! over the memory store, with two demo users (password "demo-password").
use std::{net::SocketAddr, sync::Arc};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header::CONTENT_TYPE};
use rcpat::model::{Header, MailMessage, Request, Settings};
use rcpat_store::{Admin, MemoryStorage, NewUser};
use rcpat_wasmtime::{Mail, RcpatCtx, RcpatPre, RcpatView};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// Your store data: the rcpat context, beside anything of your own.
struct Data(RcpatCtx);
impl RcpatView for Data {
    fn rcpat(&mut self) -> &mut RcpatCtx {
        &mut self.0
    }
}

/// Your mail: here only told on stdout (never the text: it carries codes).
struct PrintMail;
impl Mail for PrintMail {
    fn send(&self, m: &MailMessage) -> rcpat::storage::HostResult<()> {
        println!("mail to {:?}: {}", m.to, m.subject);
        Ok(())
    }
}

type App = (Engine, RcpatPre<Data>, RcpatCtx, Settings);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::default();
    let component = Component::new(&engine, rcpat_component::WASM)?;
    let mut linker = Linker::<Data>::new(&engine);
    rcpat_wasmtime::add_to_linker(&mut linker)?; // storage and mail
    rcpat_wasmtime::add_wasi_to_linker(&mut linker)?; // clock and randomness
    let pre = RcpatPre::new(&linker, &component)?; // type-checked once
    let store = Arc::new(MemoryStorage::new());
    let password = bcrypt::hash(rcpat::token::sha256_hex(b"demo-password"), 10)?; // as Rocket.Chat
    for (name, role) in [("alice", "user"), ("guest", "guest")] {
        let user = NewUser::new(format!("{name}-id"), name, &[role]);
        store.create_user(&NewUser { password_bcrypt: Some(password.clone()), ..user })?;
    }
    let code_key = rcpat_store::random::random_bytes(32); // yours: stable, kept outside storage
    let ctx = RcpatCtx::new(store, Arc::new(PrintMail), &code_key)?;
    let settings = pre.default_settings(&mut Store::new(&engine, Data(ctx.clone())))?;
    let router = axum::Router::new().fallback(handle).with_state(Arc::new((engine, pre, ctx, settings)));
    let port = std::env::args().nth(1).unwrap_or_else(|| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Ok(axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await?)
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, [(axum::http::HeaderName, &'static str); 1], String), StatusCode> {
    let route = rcpat_wasmtime::route_at(uri.path()).ok_or(StatusCode::NOT_FOUND)?;
    let headers = headers.iter().map(|(n, v)| Header { name: n.to_string(), value: v.as_bytes().to_vec() });
    let request = Request {
        headers: headers.collect(),
        client_address: peer.ip().to_string(),
        body: body.into(),
        query: uri.query().unwrap_or("").into(),
    };
    // A fresh instance in a fresh store per request, off the async threads.
    let reply = tokio::task::spawn_blocking(move || {
        let (engine, pre, ctx, settings) = &*app;
        pre.call(&mut Store::new(engine, Data(ctx.clone())), route, settings, &request)
    });
    let (status, body) = match reply.await {
        Ok(Ok(reply)) => (StatusCode::from_u16(reply.status).expect("a valid status"), reply.body),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, r#"{"success":false,"error":"Internal error"}"#.into()),
    };
    Ok((status, [(CONTENT_TYPE, "application/json")], body))
}
