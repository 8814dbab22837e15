package sandbox

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
)

const maxAttachment = 32 << 20

// attachmentMeta renders sys_attachment metadata as the Attachment API does (s.mu held).
func (s *Server) attachmentMeta(rec record, base string) map[string]string {
	out := map[string]string{}
	for _, f := range s.schema["sys_attachment"].Fields {
		if f.Name == "hash" {
			continue
		}
		out[f.Name] = rec[f.Name]
	}
	out["download_link"] = base + "/api/now/attachment/" + rec["sys_id"] + "/file"
	name := func(user string) string {
		if id := s.userIDByNameLocked(user); id != "" {
			return s.data["sys_user"].rows[id]["name"]
		}
		return user
	}
	out["created_by_name"] = name(rec["sys_created_by"])
	out["updated_by_name"] = name(rec["sys_updated_by"])
	return out
}

// serveAttachment handles /api/now/attachment/...; false means "no such route".
func (s *Server) serveAttachment(w http.ResponseWriter, r *http.Request, p *principal, rest []string) bool {
	td := s.schema["sys_attachment"]
	base := baseURL(r)
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
		q := r.URL.Query()
		limit := 1000
		if v, err := strconv.Atoi(q.Get("sysparm_limit")); err == nil && v > 0 {
			limit = v
		}
		offset := 0
		if v, err := strconv.Atoi(q.Get("sysparm_offset")); err == nil && v > 0 {
			offset = v
		}
		env := &evalEnv{s: s, user: p, now: s.now()}
		s.mu.RLock()
		cq, err := env.compile(td, parseQuery(q.Get("sysparm_query")))
		if err != nil {
			s.mu.RUnlock()
			writeErr(w, http.StatusForbidden, "Insufficient rights to query records", nil)
			return true
		}
		ids := env.selectRows(td.Name, cq)
		total := len(ids)
		page := ids[min(offset, total):min(offset+limit, total)]
		out := []map[string]string{}
		for _, id := range page {
			rec := s.data[td.Name].rows[id]
			if s.canReadRow(td, rec, p) {
				out = append(out, s.attachmentMeta(rec, base))
			}
		}
		s.mu.RUnlock()
		setPagingHeaders(w.Header(), base+r.URL.Path, q, offset, limit, total, len(page))
		writeJSON(w, http.StatusOK, map[string]any{"result": out})
	case len(rest) == 1 && rest[0] == "file" && r.Method == http.MethodPost:
		q := r.URL.Query()
		table, tid, name := q.Get("table_name"), q.Get("table_sys_id"), q.Get("file_name")
		ct := r.Header.Get("Content-Type")
		if table == "" || tid == "" || name == "" {
			writeErr(w, http.StatusBadRequest, "Failed to create the attachment. File part might be missing in the request.", "table_name, table_sys_id and file_name are mandatory")
			return true
		}
		if ct == "" {
			writeErr(w, http.StatusBadRequest, "Content-Type header is mandatory", "Send the file's MIME type as Content-Type")
			return true
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAttachment))
		if err != nil {
			writeErr(w, http.StatusBadRequest, "Failed to read the attachment", err.Error())
			return true
		}
		s.createAttachment(w, r, p, table, tid, name, ct, body)
	case len(rest) == 1 && rest[0] == "upload" && r.Method == http.MethodPost:
		s.uploadMultipart(w, r, p)
	case len(rest) == 1 && (r.Method == http.MethodGet || r.Method == http.MethodDelete):
		id := rest[0]
		s.mu.Lock()
		rec := s.data[td.Name].rows[id]
		if rec == nil || !s.canReadRow(td, rec, p) {
			s.mu.Unlock()
			notFound(w)
			return true
		}
		if r.Method == http.MethodGet {
			meta := s.attachmentMeta(rec, base)
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, map[string]any{"result": meta})
			return true
		}
		if !p.has(s.schema[rec["table_name"]].Write) && rec["sys_created_by"] != p.UserName {
			s.mu.Unlock()
			aclDenied(w, "Delete")
			return true
		}
		s.deleteLocked(td.Name, id)
		s.mu.Unlock()
		s.markDirty()
		w.WriteHeader(http.StatusNoContent)
	case len(rest) == 2 && rest[1] == "file" && r.Method == http.MethodGet:
		s.mu.RLock()
		rec := s.data[td.Name].rows[rest[0]]
		if rec == nil || !s.canReadRow(td, rec, p) {
			s.mu.RUnlock()
			notFound(w)
			return true
		}
		meta := s.attachmentMeta(rec, base)
		data := s.files[rest[0]]
		s.mu.RUnlock()
		mb, _ := json.Marshal(meta)
		h := w.Header()
		h.Set("Content-Type", meta["content_type"])
		h.Set("Content-Length", strconv.Itoa(len(data)))
		h.Set("X-Attachment-Metadata", string(mb))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(data)
		}
	default:
		return false
	}
	return true
}

func (s *Server) createAttachment(w http.ResponseWriter, r *http.Request, p *principal, table, tid, name, ct string, body []byte) {
	td := s.schema[table]
	s.mu.Lock()
	var target record
	if td != nil {
		target = s.data[table].rows[tid]
	}
	if target == nil || !s.canReadRow(td, target, p) {
		s.mu.Unlock()
		notFound(w)
		return
	}
	if !p.has(td.Write) {
		s.mu.Unlock()
		aclDenied(w, "Insert")
		return
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		ct = mt
	}
	rec := emptyRecord(s.schema["sys_attachment"])
	rec["file_name"], rec["content_type"], rec["table_name"], rec["table_sys_id"] = name, ct, table, tid
	rec["size_bytes"], rec["size_compressed"], rec["compressed"] = strconv.Itoa(len(body)), strconv.Itoa(len(body)), "false"
	rec["hash"] = sha256Hex(body)
	s.stamp(rec, p, true)
	id := rec["sys_id"]
	d := s.data["sys_attachment"]
	d.rows[id] = rec
	d.order = append(d.order, id)
	s.files[id] = append([]byte(nil), body...)
	meta := s.attachmentMeta(rec, baseURL(r))
	s.mu.Unlock()
	s.markDirty()
	w.Header().Set("Location", baseURL(r)+"/api/now/attachment/"+id)
	writeJSON(w, http.StatusCreated, map[string]any{"result": meta})
}

func (s *Server) uploadMultipart(w http.ResponseWriter, r *http.Request, p *principal) {
	r.Body = http.MaxBytesReader(w, r.Body, maxAttachment+1<<20)
	mr, err := r.MultipartReader()
	if err != nil {
		writeErr(w, http.StatusBadRequest, "Failed to create the attachment. File part might be missing in the request.", "The request must be multipart/form-data")
		return
	}
	fields := map[string]string{}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeErr(w, http.StatusBadRequest, "Failed to create the attachment. File part might be missing in the request.", err.Error())
			return
		}
		if part.FileName() == "" {
			b, _ := io.ReadAll(io.LimitReader(part, 1<<16))
			fields[part.FormName()] = string(b)
			continue
		}
		body, err := io.ReadAll(part)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "Failed to read the attachment", err.Error())
			return
		}
		ct := part.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		if v := fields["Content-Type"]; v != "" {
			ct = v
		}
		if fields["table_name"] == "" || fields["table_sys_id"] == "" {
			writeErr(w, http.StatusBadRequest, "Failed to create the attachment. File part might be missing in the request.", "table_name and table_sys_id must come before the file part")
			return
		}
		s.createAttachment(w, r, p, fields["table_name"], fields["table_sys_id"], part.FileName(), ct, body)
		return
	}
	writeErr(w, http.StatusBadRequest, "Failed to create the attachment. File part might be missing in the request.", nil)
}
