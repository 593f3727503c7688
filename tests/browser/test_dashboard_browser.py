"""The dashboard in a real browser (headless chromium) against the local stack with real client processes:
create a job through the form, see it listed, watch its charts gain rounds, change its lr, draw a digit and
read the answer, stop it with the button; no console errors. Screenshots of each view go to
results/dashboard-screenshots/ (and the test's own folder) to be looked at."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from flcli.operator import Operator
from helpers import ADMIN, random_weights

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SHOTS = ROOT / "results" / "dashboard-screenshots"


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM or not DRIVER:
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver; "
            ".ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1360,1900",
        "--force-device-scale-factor=1",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except WebDriverException as exc:
        pytest.skip(f"chromium could not start here: {exc.msg}")
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver, what, check, timeout=90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = check()
        except Exception:  # the page is re-rendering: look again
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; page: {driver.find_element('id', 'view').text[:500]}")


def shoot(driver, tmp_path, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    shutil.copy(tmp_path / f"{name}.png", SHOTS / f"{name}.png")


def test_an_operator_runs_a_job_from_the_dashboard(browser, function_url, fleet_env, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    by_id = lambda i: d.find_element(By.ID, i)  # noqa: E731
    d.get(f"{function_url}/dashboard#token={ADMIN}")
    wait(d, "the jobs view", lambda: "Jobs" in by_id("view").text)
    assert "token" not in d.current_url  # taken from the fragment, kept in sessionStorage, out of the URL
    shoot(d, tmp_path, "1-jobs")

    by_id("nav-create").click()
    wait(d, "the form", lambda: by_id("create-form"))
    Select(by_id("create-preset")).select_by_visible_text("MNIST, quick (3 rounds)")
    for field, value in (
        ("name", "browser test"),
        ("rounds", "10000"),
        ("num_clients", "3"),
        ("clients_per_round", "3"),
        ("tags", "browser, demo"),
    ):
        by_id(f"create-{field}").clear()
        by_id(f"create-{field}").send_keys(value)
    shoot(d, tmp_path, "2-create")
    by_id("create-submit").click()
    wait(d, "the job page", lambda: "#job=" in d.current_url)
    job_id = d.current_url.split("#job=")[1]

    by_id("nav-jobs").click()
    wait(d, "the job in the list", lambda: "browser test" in by_id("view").text)

    env, _ = fleet_env(3)
    subprocess.run(
        [str(ROOT / "scripts" / "start_clients_aws.sh"), "3"], env={**env, "FL_JOB_ID": job_id}, cwd=ROOT, check=True
    )
    try:
        d.get(f"{function_url}/dashboard#job={job_id}")
        points = lambda: int(d.find_element(By.CSS_SELECTOR, ".chart").get_attribute("data-points"))  # noqa: E731
        wait(d, "a first round on the chart", lambda: points() >= 1, timeout=180)
        first = points()
        wait(d, "the chart to gain a round", lambda: points() > first, timeout=180)

        by_id("set-lr").send_keys("0.02")
        by_id("change-apply").click()
        wait(d, "the change to be accepted", lambda: "applies from round" in by_id("change-result").text)
        assert Operator(function_url, ADMIN).status(job_id)["changes"][0]["set"] == {"lr": 0.02}

        canvas = by_id("draw")
        ActionChains(d).move_to_element_with_offset(canvas, 0, -90).click_and_hold().move_by_offset(
            0, 60
        ).move_by_offset(0, 60).move_by_offset(0, 60).release().perform()
        by_id("predict-global").click()
        wait(d, "the model's answer", lambda: "global model of round" in by_id("answer").text)
        answer = by_id("answer").text
        assert answer.split(": ")[1][0].isdigit()
        wait(d, "a round closing while the answer stays", lambda: points() >= 3, timeout=180)
        assert by_id("answer").text == answer  # redraws keep what the user drew and was told
        wait(d, "the settings change in the table", lambda: "0.02" in by_id("changes-table").text)
        shoot(d, tmp_path, "3-job")

        # the job page redraws its buttons every few seconds (rounds close about every second here):
        # click the one on the page now, and accept the confirmation once it is open
        wait(d, "clicking Stop job", lambda: by_id("stop-job").click() or True)

        def give_reason():
            prompt = d.switch_to.alert
            prompt.send_keys("enough for the browser test")
            prompt.accept()
            return True

        wait(d, "the question why", give_reason)
        wait(d, "the job stopped", lambda: "enough for the browser test" in by_id("job-summary").text)
        shoot(d, tmp_path, "4-job-stopped")
        assert Operator(function_url, ADMIN).status(job_id)["state"] == "stopped"
    finally:
        subprocess.run([str(ROOT / "scripts" / "stop_clients_aws.sh")], env=env, cwd=ROOT, check=False)

    by_id("nav-devices").click()
    wait(d, "the devices", lambda: "linux/" in by_id("view").text)
    shoot(d, tmp_path, "5-devices")

    d.get(f"{function_url}/dashboard#job=job-doesnotexist")
    wait(d, "a readable error", lambda: "no job 'job-doesnotexist'" in by_id("banner").text)
    shoot(d, tmp_path, "6-error")
    # the one expected failure: the status of the job that does not exist
    severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "/status" not in e["message"]]
    assert not severe, severe


def test_without_a_token_the_page_asks_for_one(browser, function_url, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"{function_url}/dashboard")
    banner = wait(browser, "the token prompt", lambda: browser.find_element(By.ID, "banner").text)
    assert "operator token" in banner
    browser.find_element(By.ID, "token-input").send_keys(ADMIN)
    browser.find_element(By.ID, "token-save").click()
    wait(
        browser,
        "the jobs",
        lambda: (
            "Jobs" in browser.find_element(By.ID, "view").text
            and browser.find_element(By.ID, "banner").get_attribute("hidden") is not None
        ),
    )


def test_an_async_job_page_shows_versions_staleness_and_throughput(browser, function_url, tmp_path):
    from selenium.webdriver.common.by import By

    from helpers import two_versions_over_http

    job_id = two_versions_over_http(function_url, "async in the browser")
    browser.get(f"{function_url}/dashboard#token={ADMIN}&job={job_id}")
    view = lambda: browser.find_element(By.ID, "view")  # noqa: E731
    wait(browser, "the async job", lambda: "version 3 of 5" in view().text)
    assert "async: 2 updates per version" in browser.find_element(By.ID, "job-summary").text
    titles = [c.get_attribute("aria-label") for c in browser.find_elements(By.CSS_SELECTOR, ".chart")]
    assert titles == ["Accuracy", "Loss", "Version duration", "Staleness", "Throughput"]
    assert all(c.get_attribute("data-points") == "2" for c in browser.find_elements(By.CSS_SELECTOR, ".chart"))
    assert browser.find_element(By.ID, "set-buffer_size").get_attribute("placeholder") == "2"  # changeable here
    shoot(browser, tmp_path, "7-async-job")


def test_a_tabular_job_page_shows_errors_per_round_each_device_and_predicts_a_typed_row(
    browser, function_url, tmp_path
):
    import numpy as np
    from selenium.webdriver.common.by import By

    from flcli import devices
    from helpers import HOUSES, house_rows

    rng = np.random.default_rng(5)
    files = {
        n: devices.write_device(tmp_path / n, "houses", HOUSES, house_rows(rng, 120, s))
        for n, s in (("a", 0), ("b", 1))
    }
    op = Operator(function_url, ADMIN)
    # created through the form, its data block typed as JSON
    by_id = lambda i: browser.find_element(By.ID, i)  # noqa: E731
    browser.get(f"{function_url}/dashboard#token={ADMIN}&create")
    wait(browser, "the form", lambda: by_id("create-form"))
    fields = {"name": "houses in the browser", "num_clients": "2", "clients_per_round": "2", "rounds": "3",
              "local_epochs": "5", "lr": "0.05", "batch_size": "16", "max_train_examples": ""}  # fmt: skip
    for field, value in fields.items():
        by_id(f"create-{field}").clear()
        by_id(f"create-{field}").send_keys(value)
    data = {"name": "houses", "task": "regression", "target": "price", "transform": "log1p", "exclude": ["kind"]}
    by_id("create-data").send_keys(json.dumps(data))
    by_id("create-submit").click()
    wait(browser, "the job page", lambda: "#job=" in browser.current_url)
    job_id = browser.current_url.split("#job=")[1]
    assert op.status(job_id)["config"]["data"]["target"] == "price"
    with devices.running(function_url, files, tmp_path / "state", tmp_path / "logs"):
        deadline = time.time() + 120
        while op.status(job_id)["state"] != "done" and time.time() < deadline:
            time.sleep(0.5)
    browser.get(f"{function_url}/dashboard#token={ADMIN}&job={job_id}")
    view = lambda: browser.find_element(By.ID, "view")  # noqa: E731
    wait(browser, "the tabular job", lambda: "round 3 of 3" in view().text)
    assert "regression of price" in browser.find_element(By.ID, "job-summary").text
    titles = [c.get_attribute("aria-label") for c in browser.find_elements(By.CSS_SELECTOR, ".chart")]
    assert titles == ["Error (trained scale)", "Error (price)", "R²", "Round duration"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#per-device tbody tr")) == 2
    # the row form has a field per feature: a number for size and rooms, the known towns for town
    assert browser.find_element(By.ID, "row-size").get_attribute("type") == "number"
    towns = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#row-town option")]
    assert set(towns) == {"(missing)", "north", "south", "east"}
    browser.find_element(By.ID, "row-size").send_keys("150")
    browser.find_element(By.CSS_SELECTOR, "#row-town option[value=north]").click()
    browser.find_element(By.ID, "row-predict").click()
    answer = wait(
        browser, "the answers", lambda: "ensemble" in (t := browser.find_element(By.ID, "row-answer").text) and t
    )
    assert "global model of round 3" in answer and "ensemble of 2 devices' models" in answer
    expected = op.call("predict", {"job_id": job_id, "rows": [{"size": 150, "town": "north"}]})["predictions"][0]
    assert f"{expected:.0f}" in answer
    shoot(browser, tmp_path, "8-tabular-job")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_a_waiting_job_page_shows_its_criteria_rules_and_why_it_waits(browser, function_url, tmp_path):
    from selenium.webdriver.common.by import By

    op = Operator(function_url, ADMIN)
    criteria = {"info.labels.site": "nowhere-at-all"}
    rules = [{"when": {"round": 2}, "then": {"stop": "two is enough"}}]
    job_id = op.call("create_job", {"name": "waits", "criteria": criteria, "rules": rules})["job_id"]
    browser.get(f"{function_url}/dashboard#token={ADMIN}&job={job_id}")
    wait(browser, "the waiting job", lambda: browser.find_element(By.ID, "job-wait"))
    text = browser.find_element(By.ID, "job-wait").text
    assert "0 of the 20 clients" in text and '{"info.labels.site":"nowhere-at-all"} 0' in text
    assert "nowhere-at-all" in browser.find_element(By.ID, "job-criteria").text
    assert "two is enough" in browser.find_element(By.ID, "rules-table").text
    shoot(browser, tmp_path, "9-waiting-job")


def test_a_private_job_page_says_the_epsilon_spent_and_that_the_sum_is_all_the_function_sees(
    browser, function_url, tmp_path
):
    from selenium.webdriver.common.by import By

    from clients.secure import SecureClient, Trained
    from clients.transport import make_transport

    fn = make_transport(function_url)
    body = {"name": "private", "num_clients": 3, "clients_per_round": 3, "min_updates": 2, "rounds": 3,
            "secure_aggregation": {}, "dp": {"noise_multiplier": 1.0, "target_epsilon": 200}}  # fmt: skip
    job_id = fn.call("create_job", body, token=ADMIN)["job_id"]
    subs = [fn.call("subscribe", {"job_id": job_id}) for _ in range(3)]
    devices = [
        SecureClient(lambda a, b=None, s=s: fn.call(a, b, token=s["token"]), lambda s=s: s["client_id"]) for s in subs
    ]
    for _ in range(6):  # one secure round over HTTP, each device running the client's own protocol code
        for i, (sub, dev) in enumerate(zip(subs, devices)):
            reply = fn.call("poll", {}, token=sub["token"])
            if reply["action"] == "train" and not dev.holds(job_id, 1):
                dev.keep(Trained(job_id, 1, random_weights(seed=i), 50, {}, True, {}))
                dev.advertise(job_id, 1, reply["secure"]["attempt"])
            elif reply["action"] == "secure":
                dev.step(job_id, reply["secure"])
    browser.get(f"{function_url}/dashboard#token={ADMIN}&job={job_id}")
    wait(browser, "the private job", lambda: browser.find_element(By.ID, "job-privacy"))
    wait(browser, "round 1 closed", lambda: "after 1 round;" in browser.find_element(By.ID, "job-privacy").text)
    text = browser.find_element(By.ID, "job-privacy").text
    assert "Differential privacy: ε = " in text and "of a budget of 200" in text, text
    assert "Secure aggregation: the function sees only the sum" in text and "round 2, attempt 0, stage keys" in text
    shoot(browser, tmp_path, "10-private-job")


def test_a_named_operator_logs_in_and_the_audit_page_says_who_did_what(browser, function_url, tmp_path):
    import uuid

    from selenium.webdriver.common.by import By

    root = Operator(function_url, ADMIN)
    name = f"dash-{uuid.uuid4().hex[:6]}"
    token = root.call("create_operator_token", {"name": name, "role": "operator"})["token"]
    mine = Operator(function_url, token)
    job_id = mine.call("create_job", {"name": "audited", "num_clients": 2, "clients_per_round": 2})["job_id"]
    mine.call("stop_job", {"job_id": job_id, "reason": "seen in the audit"})
    browser.get(f"{function_url}/dashboard#token={token}&audit")
    wait(browser, "who is logged in", lambda: browser.find_element(By.ID, "who-name").text == f"{name} (operator)")
    wait(browser, "the audit trail", lambda: browser.find_element(By.ID, "audit-table"))
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")]
    assert any(f"{name} (operator)" in r and "stop_job" in r and "seen in the audit" in r for r in rows), rows[:5]
    assert any(f"{name} (operator)" in r and "create_job" in r and job_id in r for r in rows)
    shoot(browser, tmp_path, "11-audit")


def test_a_job_page_shows_what_its_devices_said(browser, function_url, tmp_path):
    from selenium.webdriver.common.by import By

    from clients.transport import make_transport

    fn = make_transport(function_url)
    job_id = fn.call("create_job", {"name": "talkative", "num_clients": 2, "clients_per_round": 2}, token=ADMIN)[
        "job_id"
    ]
    subs = [fn.call("subscribe", {"job_id": job_id}) for _ in range(2)]
    now = time.time()
    fn.call("poll", {"log": [{"at": now, "level": "info", "text": "round 1 trained in 2.5s", "round": 1},
                             {"at": now + 1, "level": "warning", "text": "battery at 15 %"}]},
            token=subs[0]["token"])  # fmt: skip
    browser.get(f"{function_url}/dashboard#token={ADMIN}&job={job_id}")
    wait(browser, "the log panel", lambda: "battery at 15 %" in browser.find_element(By.ID, "job-log").text)
    text = browser.find_element(By.ID, "job-log").text
    assert f"{subs[0]['client_id']} round 1: round 1 trained in 2.5s" in text and "WARNING" in text
    fn.call("poll", {"log": [{"at": now + 2, "level": "error", "text": "disk full"}]}, token=subs[1]["token"])
    wait(browser, "a new line, without reloading", lambda: "disk full" in browser.find_element(By.ID, "job-log").text)
    browser.execute_script("document.getElementById('job-log').scrollIntoView()")
    browser.save_screenshot(str(tmp_path / "12-device-log.png"))
    shutil.copy(tmp_path / "12-device-log.png", SHOTS / "12-device-log.png")
    # a registered device's own page: its lines from every job
    device = fn.call("register", {"info": {"platform": "linux/aarch64", "datasets": {"mnist": 600}}}, token=ADMIN)
    other = fn.call("create_job", {"num_clients": 1, "clients_per_round": 1}, token=ADMIN)["job_id"]
    joined = fn.call("join", {"job_id": other}, token=device["token"])
    fn.call("poll", {"log": [{"at": time.time(), "level": "error", "text": "camera unplugged"}]},
            token=joined["token"])  # fmt: skip
    browser.get(f"{function_url}/dashboard#devices&device={device['device_id']}")
    wait(browser, "the device's log", lambda: "camera unplugged" in browser.find_element(By.ID, "job-log").text)
    assert f"What {device['device_id']} said" in browser.find_element(By.ID, "view").text
    shoot(browser, tmp_path, "13-device-page-log")
