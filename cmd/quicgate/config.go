package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// configAliases are friendlier names for flags in a configuration file.
var configAliases = map[string]string{"forward": "L", "dynamic": "D"}

// applyConfig sets fs's flags from a YAML file whose keys are the flag names (a list sets a
// repeatable flag once per item). Flags given on the command line win over the file, except
// repeatable ones, whose items from both count. Every
// error names the file and line of the bad entry.
func applyConfig(fs *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	onCLI := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCLI[f.Name] = true })
	return applyConfigData(fs, path, data, onCLI)
}

func applyConfigData(fs *flag.FlagSet, path string, data []byte, onCLI map[string]bool) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		return usageErr("%s: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return usageErr("%s:%d: want a mapping of setting: value", path, root.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, val := root.Content[i], root.Content[i+1]
		name := key.Value
		if alias, ok := configAliases[name]; ok {
			name = alias
		}
		if name == "config" || fs.Lookup(name) == nil {
			return usageErr("%s:%d: unknown setting %q", path, key.Line, key.Value)
		}
		if line, dup := seen[name]; dup {
			return usageErr("%s:%d: %q is set again (first on line %d)", path, key.Line, key.Value, line)
		}
		seen[name] = key.Line
		// A value the command line sets wins over the file's; a list the command line adds to
		// (-L, --allow) takes the file's items too.
		if _, isList := fs.Lookup(name).Value.(*multiFlag); onCLI[name] && !isList {
			continue
		}
		var values []*yaml.Node
		switch val.Kind {
		case yaml.ScalarNode:
			values = []*yaml.Node{val}
		case yaml.SequenceNode:
			values = val.Content
		default:
			return usageErr("%s:%d: %s: want a value or a list of values", path, val.Line, key.Value)
		}
		for _, v := range values {
			if v.Kind != yaml.ScalarNode {
				return usageErr("%s:%d: %s: want a plain value", path, v.Line, key.Value)
			}
			if err := fs.Set(name, v.Value); err != nil {
				if f := fs.Lookup(name); f != nil {
					if g, ok := f.Value.(flag.Getter); ok && isDuration(g) {
						err = fmt.Errorf("%q: want a duration such as 10s, 1m30s or 2h", v.Value)
					}
				}
				return usageErr("%s:%d: %s: %v", path, v.Line, key.Value, err)
			}
		}
	}
	return nil
}

// parseWithConfig parses the command line, then fills what it left unset from --config.
func parseWithConfig(fs *flag.FlagSet, args []string, configPath *string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return nil
	}
	return applyConfig(fs, *configPath)
}
