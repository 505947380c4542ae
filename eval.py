"""Evaluate a TinyGPT checkpoint on a text: its loss, perplexity and bits per character.

    python eval.py ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt             # its val split
    python eval.py ckpt_path=... data.path=other.txt split=all skip_unknown=true

The run itself is tinygpt.cli.eval (tests call its evaluate() in-process).
"""

from tinygpt.cli.eval import main

if __name__ == "__main__":
    main()
