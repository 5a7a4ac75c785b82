// The model card's Markdown as page elements: headings, paragraphs, "- " lists, pipe tables and
// `code` spans, the subset imgrade writes. Every piece of text is set with textContent, never
// innerHTML, so markup in a card (a data set named "<b>x</b>") shows as text.
"use strict";

window.imgradeMarkdown = (() => {
  /** Text with `code` spans as <code> elements. */
  function inline(parent, text) {
    text.split(/(`[^`]*`)/).forEach((piece) => {
      if (piece.length > 2 && piece.startsWith("`") && piece.endsWith("`")) {
        const code = document.createElement("code");
        code.textContent = piece.slice(1, -1);
        parent.append(code);
      } else if (piece) {
        parent.append(document.createTextNode(piece));
      }
    });
    return parent;
  }

  /** The cells of a table row "| a | b\| c |" (an escaped pipe stays in its cell). */
  function cells(line) {
    const inner = line.trim().replace(/^\|/, "").replace(/\|$/, "");
    return inner.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
  }

  function table(lines) {
    const node = document.createElement("table");
    const rows = lines.filter((line) => !/^\|?\s*:?-{3,}/.test(line.trim()));
    rows.forEach((line, index) => {
      const section = index === 0 ? "thead" : "tbody";
      let part = node.querySelector(section);
      if (!part) node.append((part = document.createElement(section)));
      const row = document.createElement("tr");
      for (const text of cells(line)) row.append(inline(document.createElement(index === 0 ? "th" : "td"), text));
      part.append(row);
    });
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.append(node);
    return wrap;
  }

  /**
   * Page elements for ``markdown``; a heading of level n becomes h(n + shift), at most h6.
   * @param {string} markdown
   * @param {number} shift
   * @returns {Node[]}
   */
  function render(markdown, shift = 0) {
    const nodes = [];
    const lines = String(markdown).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (!line.trim()) {
        i += 1;
      } else if (heading) {
        const level = Math.min(6, heading[1].length + shift);
        nodes.push(inline(document.createElement(`h${level}`), heading[2].trim()));
        i += 1;
      } else if (line.trim().startsWith("|")) {
        const block = [];
        while (i < lines.length && lines[i].trim().startsWith("|")) block.push(lines[i++]);
        nodes.push(table(block));
      } else if (/^\s*[-*]\s+/.test(line)) {
        const list = document.createElement("ul");
        while (i < lines.length && /^\s*[-*]\s+/.test(lines[i])) {
          list.append(inline(document.createElement("li"), lines[i++].replace(/^\s*[-*]\s+/, "")));
        }
        nodes.push(list);
      } else {
        const block = [];
        while (i < lines.length && lines[i].trim() && !/^(#{1,6}\s|\||\s*[-*]\s)/.test(lines[i])) {
          block.push(lines[i++].trim());
        }
        nodes.push(inline(document.createElement("p"), block.join(" ")));
      }
    }
    return nodes;
  }

  return { render };
})();
