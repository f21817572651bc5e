// The two DOM helpers every view uses. Text always goes in through textContent, never as HTML.
export const $ = (id) => document.getElementById(id);

export const el = (tag, cls, txt) => {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (txt != null) n.textContent = txt;
  return n;
};
