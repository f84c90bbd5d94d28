package worker

import (
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errOutsideRoots is the one answer to a model_dir the worker may not
// read. It names no path, so a caller learns nothing about the worker's
// file system (not even whether the path exists).
var errOutsideRoots = status.Error(codes.PermissionDenied,
	"worker: model_dir is not a directory inside this worker's model roots (--model-root)")

// confine returns the directory LoadShard reads for the requested
// model_dir. With no Config.ModelRoots it returns dir unchanged (the
// behaviour before roots existed). Otherwise dir and every root are made
// absolute and their symlinks resolved (filepath.EvalSymlinks), and the
// resolved dir must be a directory equal to or below a resolved root
// (compared on cleaned paths at a separator boundary, so /models-evil is
// not inside /models). Every entry of the directory must resolve inside a
// root too, so a config.json or weight file linked to elsewhere is
// refused. Any failure, a missing path included, is errOutsideRoots; the
// details go to the worker's own log. The resolved path is returned and
// used for reading, so a symlink swapped afterwards cannot redirect this
// load, though a writer inside a root can still change the files
// themselves: roots must be trees only trusted users write.
func (w *Worker) confine(dir string) (string, error) {
	if len(w.cfg.ModelRoots) == 0 {
		return dir, nil
	}
	deny := func(reason string, err error) (string, error) {
		w.cfg.Log.Warn("worker: model_dir refused", "model_dir", dir, "reason", reason, "err", err)
		return "", errOutsideRoots
	}
	roots := make([]string, 0, len(w.cfg.ModelRoots))
	for _, r := range w.cfg.ModelRoots {
		rr, err := resolve(r)
		if err != nil {
			w.cfg.Log.Warn("worker: model root unusable", "root", r, "err", err)
			continue
		}
		roots = append(roots, rr)
	}
	if dir == "" {
		return deny("empty", nil)
	}
	real, err := resolve(dir)
	if err != nil {
		return deny("does not resolve", err)
	}
	if !insideAny(real, roots) {
		return deny("outside the roots", nil)
	}
	fi, err := os.Stat(real)
	if err != nil || !fi.IsDir() {
		return deny("not a directory", err)
	}
	entries, err := os.ReadDir(real)
	if err != nil {
		return deny("unreadable", err)
	}
	for _, e := range entries {
		p, err := filepath.EvalSymlinks(filepath.Join(real, e.Name()))
		if err != nil {
			return deny("an entry does not resolve: "+e.Name(), err)
		}
		if !insideAny(p, roots) {
			return deny("an entry resolves outside the roots: "+e.Name(), nil)
		}
	}
	return real, nil
}

// resolve makes p absolute and resolves its symlinks.
func resolve(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(a)
}

// insideAny reports whether the cleaned absolute path p is one of roots or
// below one, at a separator boundary.
func insideAny(p string, roots []string) bool {
	p = filepath.Clean(p)
	for _, r := range roots {
		r = filepath.Clean(r)
		if p == r {
			return true
		}
		prefix := r
		if !strings.HasSuffix(prefix, string(filepath.Separator)) {
			prefix += string(filepath.Separator)
		}
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}
