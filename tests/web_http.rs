//! The web view over HTTP without a browser, against the real `engine serve`: the login
//! form, the session cookie (which does not open `/api`), CSRF refusal, the CSP header, and
//! a state change from the case page's form firing `iam-state-changed` as the API would.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::Value;

mod support {
    pub mod server;
}
mod web_support;

use web_support::{api, feed, hostile_event, samples, API_TOKEN, TEAM, XSS_USER};

fn session_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("caseflow_session="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_case_page_form_fires_the_same_triggers_as_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = web_support::start(dir.path());
    let base = server.base.clone();
    let api_client = reqwest::Client::new();
    for e in samples() {
        feed(&api_client, &base, &e).await;
    }
    feed(&api_client, &base, &hostile_event()).await;
    let id = api(
        &api_client,
        &base,
        &format!("/api/cases?observable=user:{XSS_USER}"),
    )
    .await["cases"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let web = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let r = web.get(format!("{base}/cases/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION].to_str().unwrap(),
        format!("/login?next=%2Fcases%2F{id}")
    );
    assert!(r.headers().contains_key(CONTENT_SECURITY_POLICY));

    // Log in through the form.
    let r = web.get(format!("{base}/login")).send().await.unwrap();
    let anon = session_of(&r).unwrap();
    let csrf = csrf_of(&r.text().await.unwrap());
    let r = web
        .post(format!("{base}/login"))
        .header(COOKIE, &anon)
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", API_TOKEN),
            ("name", "eli.analyst@acme.example"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = session_of(&r).unwrap();

    // The session is for the web view only: the API still wants the bearer token.
    let r = web
        .get(format!("{base}/api/cases"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = web
        .get(format!("{base}/cases/{id}"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap(),
        caseflow::engine::web::CSP
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(!page.contains("<script>alert"));
    let csrf = csrf_of(&page);

    // Without the CSRF token: refused, nothing changes.
    let r = web
        .post(format!("{base}/cases/{id}/state"))
        .header(COOKIE, &session)
        .form(&[("to", "in_progress")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let case = api(&api_client, &base, &format!("/api/cases/{id}")).await;
    assert_eq!(case["case"]["state"], "new");

    // With it: the state changes, and iam-state-changed assigns the case.
    let r = web
        .post(format!("{base}/cases/{id}/state"))
        .header(COOKIE, &session)
        .form(&[("csrf", csrf.as_str()), ("to", "in_progress")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let deadline = Instant::now() + Duration::from_secs(20);
    let case: Value = loop {
        let c = api(&api_client, &base, &format!("/api/cases/{id}")).await["case"].clone();
        if c["assignee"].is_string() || Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(case["state"], "in_progress");
    let assignee = case["assignee"]
        .as_str()
        .expect("iam-state-changed assigned it");
    assert!(TEAM.contains(&assignee));
    let assigned = case["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "assigned")
        .unwrap();
    assert_eq!(assigned["actor"]["playbook"], "iam-state-changed");
    let run_id = assigned["actor"]["run_id"].as_str().unwrap();
    let changed = case["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "state_changed")
        .unwrap();
    assert_eq!(changed["actor"]["name"], "eli.analyst@acme.example");

    // The run that did it, with its graph, once it has finished.
    while api(&api_client, &base, &format!("/api/runs/{run_id}")).await["run"]["status"]
        == "running"
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = web
        .get(format!("{base}/runs/{run_id}"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("iam-state-changed"));
    assert_eq!(
        page.matches("<g class=\"step succeeded\"").count(),
        2,
        "{page}"
    );
}
