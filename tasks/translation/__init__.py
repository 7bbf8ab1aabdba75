"""Machine translation: source-language text to target-language text, scored with sacreBLEU."""
