// The API reference page: the operations of /openapi.json as plain HTML, built with DOM calls (no
// innerHTML: the document's text is never parsed as markup). Served from the package, no CDN.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

async function main() {
  const out = document.getElementById("operations");
  let doc;
  try {
    doc = await (await fetch("/openapi.json")).json();
  } catch (e) {
    out.textContent = "Could not load /openapi.json: " + e;
    return;
  }
  out.textContent = "";
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "patch", "delete", "head"].includes(method)) continue;
      const section = el("section");
      section.append(el("h2", method.toUpperCase() + " " + path));
      if (op.summary) section.append(el("p", op.summary));
      if (op.description) section.append(el("p", op.description));
      const params = op.parameters || [];
      if (params.length) {
        const list = el("ul");
        for (const p of params) {
          list.append(el("li", p.name + " (" + p.in + (p.required ? ", required" : "") + ")" +
                                (p.description ? ": " + p.description : "")));
        }
        section.append(list);
      }
      const codes = Object.keys(op.responses || {});
      if (codes.length) section.append(el("p", "Answers: " + codes.join(", ")));
      out.append(section);
    }
  }
}

main();
