package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"strings"
	"time"

	"github.com/google/uuid"
)

// jsonAt turns a value of one of coderd's database types into JSON, keyed by its `db` tags (the column names),
// and checks on the way what the type promises but Go cannot: an enum (a string type with a Valid method, as
// sqlc generates them) holds one of its values, and a JSON column holds JSON. Times are RFC 3339 with
// nanoseconds in UTC, null wrappers null or their value, enums their strings, bytes base64.
func jsonAt(v any, path string) (any, error) {
	return toJSON(reflect.ValueOf(v), path)
}

var (
	timeType       = reflect.TypeFor[time.Time]()
	uuidType       = reflect.TypeFor[uuid.UUID]()
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	ipNetType      = reflect.TypeFor[net.IPNet]()
	valuerType     = reflect.TypeFor[driver.Valuer]()
	byteSliceType  = reflect.TypeFor[[]byte]()
)

func toJSON(v reflect.Value, path string) (any, error) {
	if !v.IsValid() {
		return nil, nil
	}
	t := v.Type()
	if err := checkEnum(v, path); err != nil {
		return nil, err
	}
	switch {
	case t == timeType:
		return v.Interface().(time.Time).UTC().Format(time.RFC3339Nano), nil
	case t == uuidType:
		return v.Interface().(uuid.UUID).String(), nil
	case t == rawMessageType:
		return decodeJSONColumn(v.Bytes(), path)
	case t == ipNetType:
		n := v.Interface().(net.IPNet)
		if n.IP == nil {
			return nil, nil
		}
		return n.String(), nil
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil, nil
		}
		return toJSON(v.Elem(), path)
	case reflect.Struct:
		// sqlc's and database/sql's null wrappers (sql.NullTime, uuid.NullUUID, pqtype.NullRawMessage, Coder's
		// NullEnum types, pqtype.Inet): a value field and a Valid flag.
		if valid := v.FieldByName("Valid"); valid.IsValid() && valid.Kind() == reflect.Bool && t.NumField() == 2 &&
			(t.Implements(valuerType) || reflect.PointerTo(t).Implements(valuerType)) {
			if !valid.Bool() {
				return nil, nil
			}
			return toJSON(v.Field(0), path)
		}
		out := map[string]any{}
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name := columnName(f)
			value, err := toJSON(v.Field(i), joinPath(path, name))
			if err != nil {
				return nil, err
			}
			out[name] = value
		}
		return out, nil
	case reflect.Slice:
		if t == byteSliceType || t.Elem().Kind() == reflect.Uint8 {
			return v.Bytes(), nil
		}
		if v.IsNil() {
			return []any{}, nil
		}
		out := make([]any, v.Len())
		for i := range v.Len() {
			value, err := toJSON(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = value
		}
		return out, nil
	case reflect.Map:
		out := map[string]any{}
		iter := v.MapRange()
		for iter.Next() {
			key := fmt.Sprint(iter.Key().Interface())
			value, err := toJSON(iter.Value(), joinPath(path, key))
			if err != nil {
				return nil, err
			}
			out[key] = value
		}
		return out, nil
	case reflect.String:
		return v.String(), nil
	default:
		return v.Interface(), nil
	}
}

// checkEnum applies an enum type's own Valid method (sqlc generates one for every PostgreSQL enum).
func checkEnum(v reflect.Value, path string) error {
	if v.Kind() != reflect.String {
		return nil
	}
	m := v.MethodByName("Valid")
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 || m.Type().Out(0).Kind() != reflect.Bool {
		return nil
	}
	if !m.Call(nil)[0].Bool() {
		return fmt.Errorf("%s: %q is not a valid %s", path, v.String(), v.Type())
	}
	return nil
}

func decodeJSONColumn(raw []byte, path string) (any, error) {
	if raw == nil {
		return nil, nil
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%s: not JSON (%w): %q", path, err, raw)
	}
	return out, nil
}

func columnName(f reflect.StructField) string {
	if tag, _, _ := strings.Cut(f.Tag.Get("db"), ","); tag != "" && tag != "-" {
		return tag
	}
	if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag != "" && tag != "-" {
		return tag
	}
	return f.Name
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// selectModel reads a table Coder has no per-agent query for straight into Coder's model type T: the columns are
// T's `db` tags and each is scanned into T's own field type, so a value coderd could not decode fails here too.
func selectModel[T any](ctx context.Context, db *sql.DB, table, where string, args ...any) ([]T, error) {
	t := reflect.TypeFor[T]()
	columns := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		columns = append(columns, columnName(t.Field(i)))
	}
	query := fmt.Sprintf("SELECT %s FROM %s WHERE %s", strings.Join(columns, ", "), table, where)
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", table, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var row T
		v := reflect.ValueOf(&row).Elem()
		dest := make([]any, t.NumField())
		for i := range dest {
			dest[i] = v.Field(i).Addr().Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("%s: decode: %w", table, err)
		}
		out = append(out, row)
	}
	return out, rows.Err()
}
