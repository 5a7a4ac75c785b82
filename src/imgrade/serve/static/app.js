// The imgrade page: read the model card, send photos to POST /v1/grade, draw one card per photo.
// Plain browser JavaScript, no build step. Text from the server or from file names is only ever
// set with textContent (never innerHTML), so a file called "<img onerror=...>.png" stays text.
"use strict";

(() => {
  const TOKEN_KEY = "imgrade.token";
  const SCORE_DECIMALS = 2;
  const DEFAULT_LIMITS = { max_files: 64, max_upload_mb: 10 };
  // Bytes multipart adds around each file (boundary, headers); counted so a request stays under the limit.
  const PART_OVERHEAD = 512;
  // The service's megabyte may be 10^6 or 2^20 bytes: the smaller keeps every request accepted.
  const BYTES_PER_MB = 1e6;

  const $ = (id) => document.getElementById(id);
  const page = {
    model: $("model-title").closest("section"),
    modelTitle: $("model-title"),
    modelBadges: $("model-badges"),
    modelFacts: $("model-facts"),
    modelGrades: $("model-grades"),
    gradeList: $("grade-list"),
    modelCard: $("model-card"),
    modelCardBody: $("model-card-body"),
    banner: $("banner"),
    bannerText: $("banner-text"),
    tokenForm: $("token-form"),
    tokenInput: $("token-input"),
    tokenHint: $("token-hint"),
    fileInput: $("file-input"),
    dropZone: $("drop-zone"),
    dropHint: $("drop-hint"),
    results: $("results"),
    empty: $("empty"),
    summary: $("summary"),
    clear: $("clear"),
    cardTemplate: $("card-template"),
  };

  let model = null; // the GET /v1/model answer once read
  let queue = Promise.resolve(); // requests go one at a time, in the order photos were added
  let tokenWait = null; // the promise every 401 waits on while the token form is open
  const objectUrls = new Set();

  // ------------------------------------------------------------------------------------ helpers

  /** An element with a class, text and attributes; children appended in order. */
  function el(tag, options = {}, children = []) {
    const node = document.createElement(tag);
    if (options.className) node.className = options.className;
    if (options.text !== undefined) node.textContent = String(options.text);
    for (const [name, value] of Object.entries(options.attrs || {})) node.setAttribute(name, value);
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function formatNumber(value, decimals = SCORE_DECIMALS) {
    return Number.isFinite(value) ? value.toFixed(decimals) : "–";
  }

  function formatMegabytes(bytes) {
    return `${(bytes / BYTES_PER_MB).toFixed(1)} MB`;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status; // 0 when the service could not be reached or answered nonsense
    }
  }

  /** The one-line reason in an error answer: {"detail": "..."}, {"error": "..."} or FastAPI's list. */
  function errorMessage(body, response) {
    const detail = body && (body.detail ?? body.error);
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail)) return detail.map((item) => (item && item.msg) || JSON.stringify(item)).join("; ");
    if (detail) return JSON.stringify(detail);
    return `the service answered ${response.status} ${response.statusText}`.trim();
  }

  // ------------------------------------------------------------------------------------ API

  /**
   * fetch() with the stored token; a 401 opens the token form and retries once a token is given.
   * The answer's JSON, or with read "blob" its body as a Blob (errors are JSON either way).
   */
  async function api(path, init = {}, read = "json") {
    for (;;) {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const headers = new Headers(init.headers || {});
      headers.set("Accept", "application/json");
      if (token) headers.set("Authorization", `Bearer ${token}`);
      let response;
      try {
        response = await fetch(path, { ...init, headers });
      } catch (error) {
        throw new ApiError(0, `cannot reach the service (${error.message}): is imgrade serve still running?`);
      }
      if (response.status === 401) {
        if (token) sessionStorage.removeItem(TOKEN_KEY);
        await askForToken(Boolean(token));
        continue;
      }
      if (response.ok && read === "blob") return response.blob();
      let body = null;
      try {
        body = await response.json();
      } catch {
        if (response.ok) throw new ApiError(0, `the service answered ${response.status} but not with JSON`);
      }
      if (!response.ok) throw new ApiError(response.status, errorMessage(body, response));
      return body;
    }
  }

  function askForToken(refused) {
    page.tokenHint.textContent = refused
      ? "The service refused that token. Check it and try again."
      : "Paste the token the service was started with. It is kept in this tab only.";
    page.tokenForm.classList.toggle("token-refused", refused);
    if (!tokenWait) {
      tokenWait = new Promise((resolve) => {
        page.tokenForm.onsubmit = (event) => {
          event.preventDefault();
          const token = page.tokenInput.value.trim();
          if (!token) return;
          sessionStorage.setItem(TOKEN_KEY, token);
          page.tokenInput.value = "";
          page.tokenForm.hidden = true;
          tokenWait = null;
          resolve();
        };
      });
    }
    if (!model) page.modelTitle.textContent = "Waiting for an access token…";
    page.tokenForm.hidden = false;
    page.tokenInput.focus();
    return tokenWait;
  }

  // ------------------------------------------------------------------------------------ banner

  function showBanner(message) {
    page.bannerText.textContent = message;
    page.banner.hidden = false;
  }

  $("banner-close").addEventListener("click", () => {
    page.banner.hidden = true;
  });

  // ------------------------------------------------------------------------------------ model card

  async function loadModel() {
    try {
      model = await api("v1/model");
    } catch (error) {
      model = { limits: DEFAULT_LIMITS };
      page.modelTitle.textContent = "Model unavailable";
      showBanner(`Could not read the model card (GET /v1/model): ${error.message}`);
    }
    page.model.setAttribute("aria-busy", "false");
    if (model.task) renderModel(model);
    const limits = limitsOf(model);
    page.dropHint.textContent =
      `PNG, JPEG and other images · up to ${limits.max_upload_mb} MB each · sent ${limits.max_files} per request`;
  }

  function limitsOf(card) {
    const limits = { ...DEFAULT_LIMITS, ...((card && card.limits) || {}) };
    limits.max_files = Math.max(1, Math.floor(Number(limits.max_files)) || DEFAULT_LIMITS.max_files);
    limits.max_upload_mb = Number(limits.max_upload_mb) > 0 ? Number(limits.max_upload_mb) : DEFAULT_LIMITS.max_upload_mb;
    return limits;
  }

  function renderModel(card) {
    page.modelTitle.textContent = card.model || "imgrade model";
    document.title = `${card.model || "model"} · imgrade`;

    const runtime = { torch: "PyTorch", onnx: "ONNX Runtime", openvino: "OpenVINO" }[card.runtime] || card.runtime;
    const badges = [
      runtime ? el("span", { className: "badge", text: runtime, attrs: { title: `runtime: ${card.runtime}` } }) : null,
      card.version ? el("span", { className: "badge badge-quiet", text: `v${card.version}`, attrs: { title: "imgrade version" } }) : null,
      card.auth ? el("span", { className: "badge badge-lock", text: "token required" }) : null,
    ];
    page.modelBadges.replaceChildren(...badges.filter(Boolean));

    const limits = limitsOf(card);
    const facts = [["Task", card.task, card.target === "continuous" ? "continuous target" : null]];
    if (card.rule) facts.push(["Grade rule", card.rule, card.thresholds_reason]);
    if (card.grade_sets) {
      const coverage = Math.round(Number(card.grade_sets.coverage) * 100);
      facts.push(["Grade sets", `${coverage}% coverage`, `${card.grade_sets.method} sets, alpha ${card.grade_sets.alpha}`]);
    }
    if (card.input && card.input.size) facts.push(["Input", `${card.input.size}×${card.input.size} ${card.input.channels || "RGB"}`]);
    facts.push(["Per request", `${plural(limits.max_files, "photo")}`, `up to ${limits.max_upload_mb} MB`]);
    page.modelFacts.replaceChildren(
      ...facts.map(([term, value, note]) =>
        el("div", { className: note && note.length > 40 ? "fact fact-wide" : "fact" }, [
          el("dt", { text: term }),
          el("dd", {}, [el("span", { text: value }), note ? el("span", { className: "fact-note", text: note }) : null]),
        ]),
      ),
    );

    if (Array.isArray(card.grades) && card.grades.length) {
      page.gradeList.replaceChildren(...card.grades.map((grade) => el("li", { className: "chip", text: grade })));
      page.modelGrades.hidden = false;
    }
    if (typeof card.model_card === "string" && card.model_card.trim()) {
      // the card's "# Model card" sits under the page's h1: its headings go two levels down
      page.modelCardBody.replaceChildren(...window.imgradeMarkdown.render(card.model_card, 2));
      page.modelCard.hidden = false;
    }
  }

  // ------------------------------------------------------------------------------------ cards

  function newCard(file) {
    const card = page.cardTemplate.content.firstElementChild.cloneNode(true);
    card.dataset.file = file.name;
    card.querySelector(".file-name").textContent = file.name;
    card.querySelector(".file-name").title = file.name;
    card.querySelector(".score").textContent = "…";
    card.querySelector(".grade").textContent = "…";
    card.setAttribute("aria-busy", "true");

    const img = card.querySelector(".thumb-img");
    const url = URL.createObjectURL(file);
    objectUrls.add(url);
    img.alt = `Photo ${file.name}`;
    img.addEventListener("load", () => {
      // Tiny photos (CUCUMBER-9 is 32x32) look right as crisp pixels, not a blur.
      if (img.naturalWidth && img.naturalWidth < 128) img.classList.add("pixelated");
    });
    img.addEventListener("error", () => card.querySelector(".thumb").classList.add("thumb-broken"));
    img.src = url;

    card.querySelector(".card-body").append(
      el("div", { className: "skeleton", attrs: { "aria-hidden": "true" } }),
      el("p", { className: "pending-text", text: "Grading…" }),
    );
    return card;
  }

  function finishCard(card, state) {
    card.dataset.state = state;
    card.removeAttribute("aria-busy");
    updateSummary();
  }

  function showError(card, message) {
    card.querySelector(".grade-box")?.remove();
    card.querySelector(".score-line").replaceChildren(el("span", { className: "score-label", text: "not graded" }));
    const body = card.querySelector(".card-body");
    body.replaceChildren(
      el("p", { className: "error", attrs: { "data-testid": "error" } }, [
        el("span", { className: "error-title", text: "Could not grade this photo" }),
        el("span", { className: "error-detail", text: message }),
      ]),
    );
    finishCard(card, "error");
  }

  function showResult(card, result) {
    const score = Number(result.score);
    const scoreNode = card.querySelector(".score");
    scoreNode.textContent = formatNumber(score);
    scoreNode.title = String(result.score);
    const body = card.querySelector(".card-body");
    body.replaceChildren();

    const graded = Array.isArray(model.grades) && result.grade != null;
    if (!graded) {
      card.classList.add("card-continuous");
      card.querySelector(".grade-box")?.remove();
      finishCard(card, "done");
      return;
    }
    card.querySelector(".grade").textContent = result.grade;
    const index = Number.isInteger(result.grade_index) ? result.grade_index : model.grades.indexOf(result.grade);
    const set = Array.isArray(result.grade_set) ? result.grade_set : null;
    if (Array.isArray(model.score_range)) body.append(scoreAxis(score, index, set, result.probabilities));
    if (set) body.append(gradeSetChips(set, result.grade));
    if (result.probabilities) body.append(probabilityList(result.probabilities, result.grade));
    finishCard(card, "done");
  }

  /**
   * The score on the grade axis: one tick and label per grade, the cut points as lines, the
   * grade set's stretch shaded, the grade's own stretch stronger, a marker at the score and,
   * when the head gives them, each grade's probability as a column above its tick.
   */
  function scoreAxis(score, gradeIndex, set, probabilities) {
    const grades = model.grades;
    const [low, high] = model.score_range.map(Number);
    const cuts = Array.isArray(model.cut_points) ? model.cut_points.map(Number) : null;
    // Half a grade of margin each side, so the first and last ticks sit inside the bar.
    const start = low - 0.5;
    const end = high + 0.5;
    const percent = (value) => `${(100 * (Math.min(end, Math.max(start, value)) - start)) / (end - start)}%`;
    // The stretch of the axis each grade owns: between the cut points when there are any.
    const stretch = (k) => [
      k === 0 ? start : cuts ? cuts[k - 1] : k - 0.5,
      k === grades.length - 1 ? end : cuts ? cuts[k] : k + 0.5,
    ];

    const zones = el("div", { className: "axis-zones" });
    const track = el("div", { className: "axis-track" }, [zones]);
    grades.forEach((grade, k) => {
      const [from, to] = stretch(k);
      const classes = ["axis-zone"];
      if (set && set.includes(grade)) classes.push("in-set");
      if (k === gradeIndex) classes.push("is-grade");
      const zone = el("div", { className: classes.join(" ") });
      zone.style.left = percent(from);
      zone.style.width = `calc(${percent(to)} - ${percent(from)})`;
      zones.append(zone);
    });
    for (const cut of cuts || []) {
      const line = el("div", { className: "axis-cut", attrs: { title: `cut point ${formatNumber(cut)}` } });
      line.style.left = percent(cut);
      track.append(line);
    }
    const marker = el("div", { className: "axis-marker" });
    marker.style.left = percent(score);
    if (score < start || score > end) marker.classList.add("off-scale");
    track.append(marker);

    const ticks = el("div", { className: "axis-ticks", attrs: { "aria-hidden": "true" } });
    grades.forEach((grade, k) => {
      const classes = ["axis-tick"];
      if (set && set.includes(grade)) classes.push("in-set");
      if (k === gradeIndex) classes.push("is-grade");
      const tick = el("span", { className: classes.join(" "), text: grade });
      tick.style.left = percent(low + k * ((high - low) / Math.max(1, grades.length - 1)));
      ticks.append(tick);
    });

    const columns = probabilities ? el("div", { className: "axis-probs", attrs: { "aria-hidden": "true" } }) : null;
    if (columns) {
      grades.forEach((grade, k) => {
        const p = Math.max(0, Math.min(1, Number(probabilities[grade]) || 0));
        const column = el("span", { className: k === gradeIndex ? "axis-prob is-grade" : "axis-prob" });
        column.style.left = percent(low + k * ((high - low) / Math.max(1, grades.length - 1)));
        column.style.height = `${Math.max(p * 100, 2)}%`;
        column.title = `${grade}: ${formatNumber(p)}`;
        columns.append(column);
      });
    }

    const description = [`score ${formatNumber(score)} on the axis from ${grades[0]} to ${grades[grades.length - 1]}`];
    if (cuts) description.push(`cut points at ${cuts.map((c) => formatNumber(c)).join(", ")}`);
    if (set) description.push(`grade set ${set.join(", ") || "empty"}`);
    return el("div", { className: "axis", attrs: { "data-testid": "score-bar", role: "img", "aria-label": description.join("; ") } }, [
      columns,
      track,
      ticks,
    ]);
  }

  function gradeSetChips(set, grade) {
    const coverage = model.grade_sets ? `${Math.round(Number(model.grade_sets.coverage) * 100)}%` : "";
    const chips = set.length
      ? set.map((g) => el("li", { className: g === grade ? "chip chip-strong" : "chip", text: g }))
      : [el("li", { className: "chip chip-empty", text: "empty" })];
    return el("div", { className: "grade-set-row" }, [
      el("span", { className: "row-label", text: coverage ? `Grade set · ${coverage}` : "Grade set" }),
      el("ul", { className: "chips", attrs: { "data-testid": "grade-set", "aria-label": "grade set" } }, chips),
    ]);
  }

  function probabilityList(probabilities, grade) {
    const entries = Object.entries(probabilities);
    const rows = entries.map(([name, value]) => {
      const p = Math.max(0, Math.min(1, Number(value) || 0));
      const fill = el("span", { className: "prob-fill" });
      fill.style.width = `${p * 100}%`;
      return el("li", { className: name === grade ? "prob is-grade" : "prob" }, [
        el("span", { className: "prob-name", text: name }),
        el("span", { className: "prob-bar", attrs: { "aria-hidden": "true" } }, [fill]),
        el("span", { className: "prob-value", text: formatNumber(p) }),
      ]);
    });
    return el("details", { className: "probs" }, [
      el("summary", { text: "Probabilities" }),
      el("ul", { className: "prob-list", attrs: { "aria-label": "probability of each grade" } }, rows),
    ]);
  }

  function updateSummary() {
    const cards = Array.from(page.results.children);
    const count = (state) => cards.filter((card) => card.dataset.state === state).length;
    const parts = [];
    if (cards.length) parts.push(plural(cards.length, "photo"));
    if (count("done")) parts.push(`${count("done")} graded`);
    if (count("error")) parts.push(`${count("error")} failed`);
    if (count("pending")) parts.push(`${count("pending")} grading…`);
    page.summary.textContent = parts.join(" · ");
    page.empty.hidden = cards.length > 0;
    page.clear.hidden = cards.length === 0;
  }

  // ------------------------------------------------------------------------------------ uploads

  /** Cards for the photos at once, then requests within the service's limits, one at a time. */
  async function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    const items = files.map((file) => ({ file, card: newCard(file) }));
    page.results.prepend(...items.map((item) => item.card));
    updateSummary();
    await modelReady;

    const limits = limitsOf(model);
    const maxBytes = limits.max_upload_mb * BYTES_PER_MB;
    const requests = [];
    let current = [];
    let currentBytes = 0;
    for (const item of items) {
      const bytes = item.file.size + PART_OVERHEAD + item.file.name.length;
      if (bytes > maxBytes) {
        showError(item.card, `${formatMegabytes(item.file.size)} is over the service's limit of ${limits.max_upload_mb} MB per request`);
        continue;
      }
      if (current.length && (current.length >= limits.max_files || currentBytes + bytes > maxBytes)) {
        requests.push(current);
        current = [];
        currentBytes = 0;
      }
      current.push(item);
      currentBytes += bytes;
    }
    if (current.length) requests.push(current);
    for (const request of requests) queue = queue.then(() => grade(request));
    await queue;
  }

  async function grade(items) {
    const form = new FormData();
    for (const item of items) form.append("files", item.file, item.file.name);
    try {
      const body = await api("v1/grade", { method: "POST", body: form });
      const results = body && body.results;
      if (!Array.isArray(results) || results.length !== items.length) {
        throw new ApiError(0, `the service answered ${Array.isArray(results) ? results.length : "no"} results for ${plural(items.length, "photo")}`);
      }
      items.forEach((item, i) => showResult(item.card, results[i]));
    } catch (error) {
      if (items.length > 1 && error.status >= 400 && error.status < 500) {
        // One bad photo fails the whole request: send them one by one so only that one shows the error.
        for (const item of items) await grade([item]);
        return;
      }
      for (const item of items) showError(item.card, error.message);
      if (!(error.status >= 400 && error.status < 500)) showBanner(error.message);
    }
  }

  page.fileInput.addEventListener("change", () => {
    const files = Array.from(page.fileInput.files);
    page.fileInput.value = ""; // choosing the same photo again should grade it again
    addFiles(files);
  });

  // Drops anywhere on the page count, so a near miss does not open the photo in the tab instead.
  let dragDepth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  window.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    dragDepth += 1;
    page.dropZone.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) page.dropZone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    page.dropZone.classList.remove("dragging");
    addFiles(event.dataTransfer.files);
  });
  window.addEventListener("paste", (event) => {
    const files = Array.from(event.clipboardData?.files || []);
    if (files.length) addFiles(files);
  });

  page.clear.addEventListener("click", () => {
    page.results.replaceChildren();
    for (const url of objectUrls) URL.revokeObjectURL(url);
    objectUrls.clear();
    updateSummary();
    page.fileInput.focus();
  });

  const modelReady = loadModel();
  updateSummary();
  // what static/label.js, the labelling view, shares
  window.imgrade = { api, showBanner, modelReady: modelReady.then(() => model) };
})();
