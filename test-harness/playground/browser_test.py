#!/usr/bin/env python3
"""The playground in a real browser: headless Chromium (Debian's chromium) driven through chromedriver's
W3C WebDriver protocol, from the Python standard library. Run by `make test` (test-playground).

It loads the page served from 127.0.0.1, and checks, through what the page shows:
  - every case of every shipped case file (filters/cases/) is decided as the case file expects: status,
    reason and the identity headers it lists — the same core as the filter, in the browser;
  - an example's deciding rule is the one highlighted;
  - a persona is one click away;
  - a pasted token (signed here by the openssl command with the test key) is verified with a pasted key set
    for a policy whose keys are fetched, refused keys_unavailable without it, and never shown back;
  - a policy broken by hand is refused with the field named, and the field is selected in the editor;
  - the page fetched nothing but its own files from its own origin.
Saves screenshots under --out. Exits 1 on the first failed check, naming it."""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Failed(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    """The few WebDriver commands the checks need."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}").get("value")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:600]
            raise Failed(f"webdriver {method} {path}: {error.code} {detail}") from None

    def start(self, user_data_dir):
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--window-size=1680,1200", f"--user-data-dir={user_data_dir}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium") or "/usr/bin/chromium", "args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def go(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def js(self, script, *args):
        return self.call("POST", self.s("/execute/sync"), {"script": script, "args": list(args)})

    def find(self, css):
        found = self.call("POST", self.s("/element"), {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def click(self, css):
        self.call("POST", self.s(f"/element/{self.find(css)}/click"), {})

    def screenshot(self, path):
        png = base64.b64decode(self.call("GET", self.s("/screenshot")))
        with open(path, "wb") as f:
            f.write(png)

    def stop(self):
        if self.session:
            try:
                self.call("DELETE", self.s(""))
            except Exception:
                pass


def wait_for(what, probe, seconds=20):
    deadline = time.time() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            raise Failed(f"timed out waiting for {what}")
        time.sleep(0.05)


def check(condition, message):
    if not condition:
        raise Failed(message)


SHOWN = """const box = document.getElementById('decision');
const rows = [...document.querySelectorAll('#forwarded-headers tr')].slice(1)
  .map(tr => [...tr.children].map(td => td.textContent));
return {status: box.dataset.status, reason: box.dataset.reason, rule: box.dataset.rule || '',
        cls: box.className, headers: rows, decisions: document.body.dataset.decisions,
        deciding: [...document.querySelectorAll('.rule.deciding')].map(r => r.dataset.rule),
        error: document.getElementById('policy-error').hidden ? null : document.getElementById('error-field').textContent};"""


def choose_policy(driver, name, cases):
    driver.click(f'#policy-select option[value="{name}"]')
    wait_for(f"policy {name}", lambda: driver.js(
        "return document.body.dataset.policy === arguments[0] && document.querySelectorAll('#cases li').length === arguments[1]",
        name, len(cases)))


def check_cases(driver, catalog):
    checked = 0
    for entry in catalog:
        if not entry["cases"]:
            continue
        with open(os.path.join(ROOT, "filters", "cases", os.path.basename(entry["cases"]))) as f:
            cases = json.load(f)["cases"]
        choose_policy(driver, entry["name"], cases)
        for n, case in enumerate(cases):
            label = f'{entry["name"]}: {case["name"]!r}'
            driver.click(f'#cases li[data-case="{n}"]')
            shown = driver.js(SHOWN)
            expect = case["expect"]
            check(shown["error"] is None, f"{label}: the page refused the policy: {shown['error']}")
            check(shown["status"] == str(expect["status"]),
                  f"{label}: shown {shown['status']} {shown['reason']}, the case expects {expect['status']}")
            if "reason" in expect:
                check(shown["reason"] == expect["reason"],
                      f"{label}: shown reason {shown['reason']!r}, the case expects {expect['reason']!r}")
            headers = dict((row[0], row[1]) for row in shown["headers"])
            for name, value in expect.get("forwarded", {}).items():
                check(headers.get(name) == value, f"{label}: upstream {name} shown {headers.get(name)!r}, expected {value!r}")
            checked += 1
    return checked


def check_broken_policy(driver, original, replace, field, selected, out_png=None):
    broken = replace(original)
    check(broken != original, f"the break for {field} changed nothing")
    set_field(driver, "policy", broken)
    shown = driver.js(SHOWN)
    check(shown["error"] == field, f"a broken policy: the page names {shown['error']!r}, expected {field!r}")
    message = driver.js("return document.getElementById('error-message').textContent")
    check(message, "a broken policy: no message")
    driver.click("#error-field")
    got = driver.js("const p = document.getElementById('policy'); return p.value.slice(p.selectionStart, p.selectionEnd);")
    check(got == selected, f"a broken policy: the editor selects {got!r}, expected {selected!r} for {field}")
    if out_png:
        driver.screenshot(out_png)
    set_field(driver, "policy", original)
    check(driver.js(SHOWN)["error"] is None, "the restored policy is still refused")
    return message


def sign_with_openssl(claims):
    """RS256 over the claims with the test key rsa-b, by the openssl command (no cryptography here)."""
    b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = {"alg": "RS256", "typ": "JWT", "kid": "rsa-b"}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    key = os.path.join(ROOT, "test-harness", "keys", "rsa-b.pem")
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                               capture_output=True, check=True).stdout
    return signing_input + "." + b64(signature)


def set_field(driver, element_id, text):
    before = driver.js("return document.body.dataset.decisions")
    driver.js("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
              "e.dispatchEvent(new Event('input', {bubbles: true}));", element_id, text)
    wait_for(f"the decision after editing #{element_id}",
             lambda: driver.js("return document.body.dataset.decisions") != before)


def check_pasted_token(driver):
    with open(os.path.join(ROOT, "filters", "cases", "demo.cases.json")) as f:
        cases = json.load(f)["cases"]
    choose_policy(driver, "demo", cases)
    n = next(i for i, c in enumerate(cases) if c["name"].startswith("data scientist scores fraud-detector"))
    driver.click(f'#cases li[data-case="{n}"]')
    claims = json.loads(driver.js("return document.getElementById('claims').value"))
    token = sign_with_openssl(claims)
    driver.click('.tab[data-mode="token"]')
    set_field(driver, "token", token)
    shown = driver.js(SHOWN)
    check(shown["status"] == "503" and shown["reason"] == "keys_unavailable",
          f"a pasted token for fetched keys without a key set: {shown['status']} {shown['reason']}")
    notes = driver.js("return document.getElementById('notes').textContent")
    check("key set" in notes, f"no note says the keys are not fetched: {notes!r}")
    with open(os.path.join(ROOT, "test-harness", "keys", "test-jwks.json")) as f:
        set_field(driver, "keys", f.read())
    shown = driver.js(SHOWN)
    check(shown["status"] == "200", f"a pasted token with its key set: {shown['status']} {shown['reason']}")
    backend = driver.js("return [...document.querySelectorAll('#checks tr')].map(r => r.textContent).find(t => t.startsWith('signature')) || ''")
    check("rust_crypto" in backend and backend.endswith("ok"), f"the signature check shown: {backend!r}")
    text = driver.js("return document.body.innerText + document.getElementById('raw').textContent")
    check(token.split(".")[2][:32] not in text and token[:60] not in text, "the pasted token is shown back")
    driver.click('.tab[data-mode="claims"]')


def run(driver, url, out):
    driver.go(url)
    wait_for("the page", lambda: driver.js("return document.body.dataset.ready") in ("1", "error"))
    check(driver.js("return document.body.dataset.ready") == "1",
          "the page did not start: " + str(driver.js("return document.getElementById('decision-detail').textContent")))
    with urllib.request.urlopen(url + "catalog.json") as f:
        catalog = json.load(f)
    check(len(catalog) >= 8, f"catalog lists {len(catalog)} policies")

    checked = check_cases(driver, catalog)
    print(f"browser: {checked} cases of {sum(1 for e in catalog if e['cases'])} case files decided as expected")

    # The example of the README: a contractor scoring a finance deployment, refused by deny[0].
    with open(os.path.join(ROOT, "filters", "cases", "entra-azureml.cases.json")) as f:
        cases = json.load(f)["cases"]
    choose_policy(driver, "entra-azureml", cases)
    n = next(i for i, c in enumerate(cases) if c["name"].startswith("contractor may not score a finance"))
    driver.click(f'#cases li[data-case="{n}"]')
    shown = driver.js(SHOWN)
    check(shown["status"] == "403" and shown["reason"] == "denied_by_rule", f"the finance example: {shown}")
    check(shown["deciding"] == ["deny[0]"], f"the highlighted rule: {shown['deciding']}")
    check(shown["rule"] == "deny[0]", f"the decision names {shown['rule']!r}")
    check("deny" in shown["cls"], f"the decision is not shown as a refusal: {shown['cls']}")
    driver.call("POST", driver.s("/window/rect"), {"width": 1680, "height": 1250})
    driver.screenshot(os.path.join(out, "playground.png"))
    print("browser: the finance example shows 403 denied_by_rule with deny[0] highlighted")

    # A persona, one click away.
    driver.click('[data-persona="entra-v2-app-managed-identity"]')
    claims = json.loads(driver.js("return document.getElementById('claims').value"))
    check(claims.get("idtyp") == "app" or "roles" in claims, f"the persona's claims: {claims}")
    check(driver.js(SHOWN)["status"] != "", "a persona's request was not decided")

    check_pasted_token(driver)
    print("browser: a pasted token is verified with a pasted key set, refused keys_unavailable without, never shown")
    choose_policy(driver, "entra-azureml", cases)

    original = driver.js("return document.getElementById('policy').value")
    message = check_broken_policy(driver, original, lambda p: p.replace('"enforce"', '"enforced"', 1),
                                  "mode", '"mode"', os.path.join(out, "playground-error.png"))
    check("enforced" in message, f"the refusal of mode: {message}")
    rule_group = original.rfind('"ml-scientists"')
    message = check_broken_policy(
        driver, original, lambda p: p[:rule_group] + '"ml-scientist"' + p[rule_group + len('"ml-scientists"'):],
        "routes[2].allow[0].groups", '"groups"')
    check("ml-scientist" in message, f"the refusal of the group name: {message}")
    print("browser: broken policies are refused with their field named and selected")

    origins = driver.js("return [...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    check(origins == [url.rstrip("/")], f"the page fetched from {origins}")
    print(f"browser: every request the page made went to {url.rstrip('/')}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=os.path.join(ROOT, "target", "playground"))
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "playground-test"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for tool in ("chromium", "chromedriver"):
        if not shutil.which(tool):
            print(f"browser_test: {tool} is missing (make browser)", file=sys.stderr)
            return 1
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "serve.py"), "--dir", args.dir, "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    port = free_port()
    driver_log = open(os.path.join(args.out, "chromedriver.log"), "w")
    chromedriver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=driver_log, stderr=subprocess.STDOUT)
    profile = tempfile.mkdtemp(prefix="mlgate-chromium-")
    driver = Driver(port)
    try:
        wait_for("chromedriver", lambda: _ready(driver), seconds=30)
        driver.start(profile)
        run(driver, url, args.out)
    except Failed as failure:
        try:
            driver.screenshot(os.path.join(args.out, "failure.png"))
        except Exception:
            pass
        print(f"browser_test: FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        driver.stop()
        chromedriver.terminate()
        server.terminate()
        chromedriver.wait(10)
        server.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
    print(f"browser_test: passed; screenshots in {args.out}")
    return 0


def _ready(driver):
    try:
        return driver.call("GET", "/status").get("ready")
    except (Failed, OSError):
        return False


if __name__ == "__main__":
    sys.exit(main())
